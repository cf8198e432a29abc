// The scenario work types (KtstrProtocol's WorkType), run inside a worker process. Each loop
// calls `progress()` once per work unit; the wake-based kinds also record how long the
// wakee took to run after its waker's timestamp. Processes that work together (ping-pong
// pairs, a fan_out parent and its children) meet through files under `rendezvous`.
import Glibc
import KtstrProtocol

/// What one worker process runs (ScenarioWorker.swift passes it on the command line).
struct WorkerConfig: Equatable {
    var index: Int
    var work: WorkType
    /// "a" / "b" for ping-pong sides, "parent" / "child" for fan_out, "" otherwise.
    var role: String = ""
    /// Path prefix of the files the processes of one unit share (/tmp/ktstr-sc<group>-<unit>).
    var rendezvous: String = ""
    /// The cgroup directory to join ("" = stay in the root).
    var cgroupDir: String = ""
    var nice: Int?
    var policy: ScenarioPolicy?
    var periodMicros: Int?
    var burstMicros: Int?
    var workingSetKiB: Int?
    var fanOut: Int = ScenarioWorkers.defaultFanOut
    /// Where the counter file goes (the guest's private /tmp; host tests pass their own).
    var dir: String = "/tmp"

    var counterPath: String { "\(dir)/ktstr-sw\(index).count" }
}

/// Defaults when the scenario does not say.
enum WorkDefaults {
    static let timerPeriodMicros = 1000, ioPeriodMicros = 2000, churnPeriodMicros = 5000, nicePeriodMicros = 10_000
    static let affinityPeriodMicros = 2000
    static let burstMicros = 50, fanOutBurstMicros = 200
    static let pageFaultKiB = 1024, cachePressureKiB = 8192
}

enum WorkTypes {
    static func run(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        switch cfg.work {
        case .spin: while true { compute(4096, c); c.progress() }
        case .yield: while true { compute(256, c); sched_yield(); c.progress() }
        case .futexPingPong: futexPingPong(cfg, c)
        case .pipePingPong: pipePingPong(cfg, c)
        case .timerSleep: timerSleep(cfg, c)
        case .forkChurn: forkChurn(c)
        case .pageFault: pageFault(cfg, c)
        case .cachePressure: cachePressure(cfg, c)
        case .ioWait: ioWait(cfg, c)
        case .niceSweep: niceSweep(cfg, c)
        case .affinityChurn: affinityChurn(cfg, c)
        case .policyChurn: policyChurn(cfg, c)
        case .fanOut: cfg.role == "child" ? fanOutChild(cfg, c) : fanOutParent(cfg, c)
        }
    }

    /// `rounds` multiply-adds; the result goes to the counter file's scratch word so the
    /// loop cannot be optimised away.
    @inline(never) static func compute(_ rounds: Int, _ c: WorkerCounters) {
        var x = c.words[CounterLayout.scratch]
        for k in 0..<rounds { x = x &* 6364136223846793005 &+ UInt64(truncatingIfNeeded: k) }
        c.words[CounterLayout.scratch] = x
    }

    /// Computes for `micros` of this thread's CPU time (time preempted does not count).
    static func burst(_ micros: Int, _ c: WorkerCounters) {
        guard micros > 0 else { compute(64, c); return }
        let end = Clock.threadCPU() + UInt64(micros) * 1000
        repeat { compute(256, c) } while Clock.threadCPU() < end
    }

    static func sleepMicros(_ us: Int) {
        var ts = timespec(tv_sec: us / 1_000_000, tv_nsec: (us % 1_000_000) * 1000)
        var rem = timespec()
        while nanosleep(&ts, &rem) != 0 && errno == EINTR { ts = rem }
    }

    /// A 4 KiB MAP_SHARED file both processes of a unit map (created by whichever comes first).
    static func sharedPage(_ path: String, _ c: WorkerCounters) -> UnsafeMutableRawPointer {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0, ftruncate(fd, 4096) == 0, let m = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), m != MAP_FAILED else {
            c.fail(.work)
            _exit(5)
        }
        close(fd)
        return m
    }

    static func openFIFO(_ path: String, _ flags: Int32, _ c: WorkerCounters) -> Int32 {
        mkfifo(path, 0o600) // EEXIST when the partner made it
        let fd = open(path, flags | O_CLOEXEC)
        if fd < 0 { c.fail(.work); _exit(5) }
        return fd
    }

    static func readStamp(_ fd: Int32) -> UInt64? {
        var v: UInt64 = 0
        var got = 0
        while got < 8 {
            let n = withUnsafeMutableBytes(of: &v) { read(fd, $0.baseAddress! + got, 8 - got) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            got += n
        }
        return v
    }

    static func writeStamp(_ fd: Int32) -> Bool {
        var v = Clock.nanos()
        return withUnsafeBytes(of: &v) { write(fd, $0.baseAddress, 8) } == 8
    }

    // MARK: wake-based kinds

    /// Sides take turns through a futex word (0: a's turn, 1: b's); the waker stamps before
    /// flipping it, the wakee measures from that stamp when it runs.
    static func futexPingPong(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let page = sharedPage(cfg.rendezvous + ".fx", c)
        let turn = page.assumingMemoryBound(to: UInt32.self)
        let stamp = (page + 8).assumingMemoryBound(to: UInt64.self)
        let me: UInt32 = cfg.role == "a" ? 0 : 1
        var first = true
        while true {
            while turn.pointee != me { SchedCalls.futexWait(turn, expected: 1 - me) }
            let now = Clock.nanos()
            // The first turn includes the partner's start-up: not a wake latency.
            if !first, now > stamp.pointee { c.wake(now - stamp.pointee) }
            first = false
            c.progress()
            burst(cfg.burstMicros ?? 0, c)
            stamp.pointee = Clock.nanos()
            turn.pointee = 1 - me
            SchedCalls.futexWake(turn, count: 1)
        }
    }

    /// Two FIFOs (a→b, b→a) carrying the writer's timestamp; both open the a→b one first.
    static func pipePingPong(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let a = cfg.role == "a"
        let ab = cfg.rendezvous + ".ab", ba = cfg.rendezvous + ".ba"
        let (rfd, wfd): (Int32, Int32) = a ? { let w = openFIFO(ab, O_WRONLY, c); return (openFIFO(ba, O_RDONLY, c), w) }()
                                           : { let r = openFIFO(ab, O_RDONLY, c); return (r, openFIFO(ba, O_WRONLY, c)) }()
        if a, !writeStamp(wfd) { _exit(0) }
        var first = true
        while true {
            guard let sent = readStamp(rfd) else { _exit(0) }
            let now = Clock.nanos()
            if !first, now > sent { c.wake(now - sent) }
            first = false
            c.progress()
            burst(cfg.burstMicros ?? 0, c)
            guard writeStamp(wfd) else { _exit(0) }
        }
    }

    /// Sleeps to absolute deadlines one period apart; the lateness past each is the wake latency.
    static func timerSleep(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let period = UInt64(cfg.periodMicros ?? WorkDefaults.timerPeriodMicros) * 1000
        var next = Clock.nanos() + period
        while true {
            var ts = timespec(tv_sec: Int(next / 1_000_000_000), tv_nsec: Int(next % 1_000_000_000))
            while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
            let now = Clock.nanos()
            c.wake(now > next ? now - next : 0)
            c.progress()
            burst(cfg.burstMicros ?? WorkDefaults.burstMicros, c)
            next += period
            // Far behind (starved): the missed deadlines are gone, the next is one period out.
            let after = Clock.nanos()
            if next <= after { next = after + period }
        }
    }

    /// A blocking read on a pipe that a feeder thread writes a timestamp to every period:
    /// a task sleeping in I/O, woken by another task.
    static func ioWait(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { c.fail(.work); _exit(5) }
        let ctx = UnsafeMutablePointer<Int>.allocate(capacity: 2)
        ctx[0] = Int(fds[1]); ctx[1] = cfg.periodMicros ?? WorkDefaults.ioPeriodMicros
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let p = arg!.assumingMemoryBound(to: Int.self)
            let fd = Int32(p[0]), period = p[1]
            while true {
                WorkTypes.sleepMicros(period)
                if !WorkTypes.writeStamp(fd) { return nil }
            }
        }, ctx)
        guard rc == 0 else { c.fail(.work); _exit(5) }
        while true {
            guard let sent = readStamp(fds[0]) else { _exit(0) }
            let now = Clock.nanos()
            c.wake(now > sent ? now - sent : 0)
            c.progress()
            burst(cfg.burstMicros ?? WorkDefaults.burstMicros, c)
        }
    }

    /// The parent stamps, bumps the generation word and wakes all children; each child
    /// measures its wake, computes a burst and reports its finish time over a FIFO; the
    /// parent waits for all and measures from the last finish to its own run.
    static func fanOutParent(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let page = sharedPage(cfg.rendezvous + ".fan", c)
        let gen = page.assumingMemoryBound(to: UInt32.self)
        let stamp = (page + 8).assumingMemoryBound(to: UInt64.self)
        // O_RDWR: the open does not wait for a writer, and reads never see EOF.
        let fd = openFIFO(cfg.rendezvous + ".in", O_RDWR, c)
        while true {
            stamp.pointee = Clock.nanos()
            gen.pointee &+= 1
            SchedCalls.futexWake(gen)
            var last: UInt64 = 0
            for _ in 0..<cfg.fanOut {
                guard let s = readStamp(fd) else { _exit(0) }
                last = max(last, s)
            }
            let now = Clock.nanos()
            c.wake(now > last ? now - last : 0)
            c.progress()
        }
    }

    static func fanOutChild(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let page = sharedPage(cfg.rendezvous + ".fan", c)
        let gen = page.assumingMemoryBound(to: UInt32.self)
        let stamp = (page + 8).assumingMemoryBound(to: UInt64.self)
        let fd = openFIFO(cfg.rendezvous + ".in", O_WRONLY, c)
        var seen: UInt32 = 0
        var first = true
        while true {
            while gen.pointee == seen { SchedCalls.futexWait(gen, expected: seen) }
            let now = Clock.nanos()
            seen = gen.pointee
            // A child started after the round began measured its own start-up: skipped.
            if !first, now > stamp.pointee { c.wake(now - stamp.pointee) }
            first = false
            burst(cfg.burstMicros ?? WorkDefaults.fanOutBurstMicros, c)
            guard writeStamp(fd) else { _exit(0) }
            c.progress()
        }
    }

    // MARK: churn and memory kinds

    static func forkChurn(_ c: WorkerCounters) -> Never {
        while true {
            let child = fork()
            if child == 0 { _exit(0) }
            if child > 0 {
                var st: Int32 = 0
                while waitpid(child, &st, 0) < 0 && errno == EINTR {}
                c.progress()
            } else {
                sleepMicros(1000)
            }
        }
    }

    /// Fresh anonymous memory every round: every page faults in, then it is unmapped.
    static func pageFault(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let size = (cfg.workingSetKiB ?? WorkDefaults.pageFaultKiB) * 1024
        while true {
            guard let m = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), m != MAP_FAILED else {
                c.fail(.work)
                sleepMicros(10_000)
                continue
            }
            for off in stride(from: 0, to: size, by: 4096) { m.storeBytes(of: UInt8(truncatingIfNeeded: off >> 12), toByteOffset: off, as: UInt8.self) }
            munmap(m, size)
            c.progress()
        }
    }

    /// A working set larger than the LLC walked one cache line at a time with a stride of
    /// 97 lines (odd, so every line is visited before the walk repeats).
    static func cachePressure(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let size = (cfg.workingSetKiB ?? WorkDefaults.cachePressureKiB) * 1024
        guard let m = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), m != MAP_FAILED else {
            c.fail(.work)
            _exit(5)
        }
        let lines = size / 64
        let words = m.bindMemory(to: UInt64.self, capacity: size / 8)
        var line = 0
        while true {
            for _ in 0..<4096 {
                words[line * 8] &+= 1
                line = (line + 97) % lines
            }
            c.progress()
        }
    }

    /// Spins, moving its own nice through -5...19 every period.
    static func niceSweep(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        spinChanging(every: cfg.periodMicros ?? WorkDefaults.nicePeriodMicros, c) { k in
            if !SchedCalls.setNice(0, -5 + k % 25) { c.fail(.nice) }
        }
    }

    /// Spins, cycling SCHED_OTHER → SCHED_BATCH → SCHED_IDLE every period.
    static func policyChurn(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let cycle: [ScenarioPolicy] = [.other, .batch, .idle]
        spinChanging(every: cfg.periodMicros ?? WorkDefaults.churnPeriodMicros, c) { k in
            if !SchedCalls.setPolicy(0, cycle[k % cycle.count]) { c.fail(.policy) }
        }
    }

    /// Spins, calling `change(k)` (k = 1, 2, …) every `periodMicros`: the churn kinds.
    static func spinChanging(every periodMicros: Int, _ c: WorkerCounters, _ change: (Int) -> Void) -> Never {
        let period = UInt64(max(1, periodMicros)) * 1000
        var k = 0
        var next = Clock.nanos() + period
        while true {
            compute(4096, c)
            c.progress()
            if Clock.nanos() >= next {
                k += 1
                change(k)
                next = Clock.nanos() + period
            }
        }
    }

    /// Spins, moving itself to a random non-empty subset of the CPUs it may use (online CPUs
    /// within its cgroup's effective cpuset, re-read every 16 moves) every period.
    static func affinityChurn(_ cfg: WorkerConfig, _ c: WorkerCounters) -> Never {
        let period = UInt64(cfg.periodMicros ?? WorkDefaults.affinityPeriodMicros) * 1000
        var rng = UInt64(cfg.index) &* 0x9E37_79B9_7F4A_7C15 | 1
        var allowed = allowedCPUs()
        var k = 0
        var next = Clock.nanos() + period
        while true {
            compute(4096, c)
            c.progress()
            guard Clock.nanos() >= next else { continue }
            k += 1
            if k % 16 == 0 { allowed = allowedCPUs() }
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
            var subset = allowed.enumerated().filter { rng >> UInt64($0.offset % 64) & 1 == 1 }.map(\.element)
            if subset.isEmpty, !allowed.isEmpty { subset = [allowed[Int(rng % UInt64(allowed.count))]] }
            // The cpuset may have changed under it (an action): fall back to all it may use.
            if !SchedCalls.setAffinity(0, subset) { allowed = allowedCPUs(); _ = SchedCalls.setAffinity(0, allowed) }
            next = Clock.nanos() + period
        }
    }

    /// Online CPUs ∩ the effective cpuset of the caller's cgroup.
    static func allowedCPUs() -> [Int] {
        let online = Sys.readText("/sys/devices/system/cpu/online", limit: 4096).flatMap { GuestTopology.cpus($0) } ?? [0]
        guard let cg = Cgroups.cgroupOf(getpid()),
              let text = Sys.readText(Cgroups.dir(cg) + "/cpuset.cpus.effective", limit: 4096),
              let cpus = GuestTopology.cpus(text), !cpus.isEmpty else { return online }
        let both = online.filter(Set(cpus).contains)
        return both.isEmpty ? online : both
    }
}
