// A scenario worker's shared counter file (/tmp/ktstr-sw<index>.count, MAP_SHARED): the
// worker writes it as it goes, the agent reads it whenever it samples, and it survives the
// worker's SIGKILL. Words 0 and 1 mean what they mean for the plain workload's workers
// (iterations, last progress stamp), so Workload.sample works on both.
import Glibc
import KtstrProtocol

enum CounterLayout {
    static let iterations = 0
    /// CLOCK_MONOTONIC ns of the last progress point.
    static let lastStamp = 1
    /// Largest gap between two consecutive progress points (ns).
    static let maxGap = 2
    /// When the worker started (CLOCK_MONOTONIC ns): the first "progress point".
    static let started = 3
    static let wakeSamples = 4
    static let wakeMax = 5
    /// Setup failures, `SetupFailure` bits.
    static let setupFailures = 6
    /// Where the compute loops leave their result (so they cannot be optimised away).
    static let scratch = 7
    /// CPUs seen at progress points: `maskWords` words, bit c of word c/64 = CPU c.
    static let cpuMask = 8
    static let maskWords = Scenario.maxCPUs / 64
    /// The wake-latency histogram (`WakeHistogram.buckets` words).
    static let histogram = 32
    static let words = histogram + WakeHistogram.buckets
    static let bytes = words * 8
}

/// What went wrong while a worker set itself up (bits of `CounterLayout.setupFailures`).
struct SetupFailure: OptionSet {
    let rawValue: UInt64
    static let cgroup = SetupFailure(rawValue: 1)
    static let nice = SetupFailure(rawValue: 2)
    static let policy = SetupFailure(rawValue: 4)
    /// The work type's own setup (a FIFO, a shared file, memory).
    static let work = SetupFailure(rawValue: 8)

    var descriptions: [String] {
        [(Self.cgroup, "could not join its cgroup"), (Self.nice, "could not set its nice value"),
         (Self.policy, "could not set its scheduling policy"), (Self.work, "could not set up its work (FIFO, shared file or memory)")]
            .filter { contains($0.0) }.map(\.1)
    }
}

/// Log-linear buckets: four per power of two, so a reported percentile is within about 12%
/// of the true value. Values below 4 ns have a bucket each.
enum WakeHistogram {
    static let buckets = 256

    static func bucket(_ v: UInt64) -> Int {
        guard v >= 4 else { return Int(v) }
        let e = 63 - v.leadingZeroBitCount // ≥ 2
        let sub = Int((v >> UInt64(e - 2)) & 3)
        return 4 * (e - 1) + sub
    }

    /// The smallest value of bucket `b`, and the first of the next.
    static func range(_ b: Int) -> (lo: UInt64, hi: UInt64) {
        guard b >= 4 else { return (UInt64(b), UInt64(b) + 1) }
        let e = b / 4 + 1, sub = UInt64(b % 4)
        let lo = (4 + sub) << UInt64(e - 2)
        let width: UInt64 = 1 << UInt64(e - 2)
        return (lo, lo &+ width < lo ? UInt64.max : lo + width)
    }

    /// The `p` quantile (0...1) of the counts: the middle of the bucket holding it, never
    /// above `max` (the largest sample). nil without samples.
    static func quantile(_ p: Double, counts: [UInt64], max: UInt64) -> UInt64? {
        let total = counts.reduce(0, &+)
        guard total > 0 else { return nil }
        let r = (Swift.min(Swift.max(p, 0), 1) * Double(total)).rounded(.up)
        // Near 2^64 the Double rounds past UInt64's range.
        let rank = r >= 1.8e19 ? total : Swift.max(1, UInt64(r))
        var seen: UInt64 = 0
        for (b, n) in counts.enumerated() {
            seen &+= n
            if seen >= rank {
                let r = range(b)
                return Swift.min(r.lo + (r.hi - r.lo) / 2, max)
            }
        }
        return max
    }
}

/// The worker's side: the mapped counter words.
struct WorkerCounters {
    let words: UnsafeMutablePointer<UInt64>

    /// Creates and maps the file (0600); nil when that fails.
    static func create(_ path: String) -> WorkerCounters? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard ftruncate(fd, off_t(CounterLayout.bytes)) == 0,
              let map = mmap(nil, CounterLayout.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else { return nil }
        let c = WorkerCounters(words: map.bindMemory(to: UInt64.self, capacity: CounterLayout.words))
        let now = Clock.nanos()
        c.words[CounterLayout.started] = now
        c.words[CounterLayout.lastStamp] = now
        return c
    }

    func fail(_ f: SetupFailure) { words[CounterLayout.setupFailures] |= f.rawValue }

    /// One work unit done: count it, stamp it, keep the largest gap and the CPU.
    @inline(__always) func progress() {
        let now = Clock.nanos()
        let last = words[CounterLayout.lastStamp]
        if now > last, now - last > words[CounterLayout.maxGap] { words[CounterLayout.maxGap] = now - last }
        words[CounterLayout.lastStamp] = now
        words[CounterLayout.iterations] &+= 1
        let cpu = SchedCalls.currentCPU()
        if cpu >= 0, cpu < Scenario.maxCPUs { words[CounterLayout.cpuMask + cpu / 64] |= 1 << UInt64(cpu % 64) }
    }

    /// One wake latency sample (ns).
    @inline(__always) func wake(_ latency: UInt64) {
        words[CounterLayout.wakeSamples] &+= 1
        if latency > words[CounterLayout.wakeMax] { words[CounterLayout.wakeMax] = latency }
        words[CounterLayout.histogram + WakeHistogram.bucket(latency)] &+= 1
    }
}

/// The agent's side: one read of a counter file.
struct CounterSnapshot {
    var words: [UInt64]

    init?(path: String) {
        guard let b = Sys.read(path, limit: CounterLayout.bytes), b.count == CounterLayout.bytes else { return nil }
        self.init(bytes: b)
    }

    init(bytes b: [UInt8]) {
        var out = [UInt64](repeating: 0, count: b.count / 8)
        for w in out.indices {
            var v: UInt64 = 0
            for k in 0..<8 { v |= UInt64(b[w * 8 + k]) << UInt64(8 * k) }
            out[w] = v
        }
        words = out
        if words.count < CounterLayout.words { words += [UInt64](repeating: 0, count: CounterLayout.words - words.count) }
    }

    subscript(_ w: Int) -> UInt64 { words[w] }

    var cpus: [Int] {
        (0..<Scenario.maxCPUs).filter { words[CounterLayout.cpuMask + $0 / 64] & (1 << UInt64($0 % 64)) != 0 }
    }

    var histogram: [UInt64] { Array(words[CounterLayout.histogram..<CounterLayout.histogram + WakeHistogram.buckets]) }
}

enum Clock {
    /// CLOCK_MONOTONIC ns (the clock workers stamp with and the agent compares against).
    @inline(__always) static func nanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// This thread's CPU time (ns).
    static func threadCPU() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
