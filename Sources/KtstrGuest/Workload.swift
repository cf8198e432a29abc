// The workload: worker processes (the agent re-executes itself with `--ktstr-worker`), each
// counting its work units in a small shared file so the count survives SIGKILL.
import Glibc
import KtstrProtocol

struct Worker {
    var index: Int
    var pid: pid_t
    var counterPath: String
    /// When the agent started it (CLOCK_MONOTONIC ns): the reference for a worker that was
    /// starved before it could stamp any progress.
    var startedAt: UInt64
}

struct WorkerSample {
    var cpuNanos: UInt64 = 0, waitNanos: UInt64 = 0, runs: UInt64 = 0, lastCPU: Int?
}

enum Workload {
    static let selfExe = "/proc/self/exe"

    /// Starts the workers; returns them or an error text.
    static func start(_ w: RunPlan.Workload) -> Result<[Worker], Sys.SpawnError> {
        // RunPlan.decode rejected unknown kinds; a plan built otherwise runs nothing.
        let kind = w.workloadKind ?? .idle
        var cgroupDir = ""
        if let cg = w.cgroup {
            cgroupDir = "/sys/fs/cgroup/" + cg
            mkdir(cgroupDir, 0o755)
        }
        var workers: [Worker] = []
        let procs = kind == .pingPong ? w.count * 2 : w.count
        if kind == .pingPong {
            for pair in 0..<w.count {
                mkfifo("/tmp/ktstr-pp\(pair).ab", 0o600)
                mkfifo("/tmp/ktstr-pp\(pair).ba", 0o600)
            }
        }
        for i in 0..<procs {
            let counter = "/tmp/ktstr-w\(i).count"
            let args = ["--ktstr-worker", kind.rawValue, String(i), String(w.periodMicros ?? 1000), cgroupDir]
            switch Sys.spawn(selfExe, args, output: nil, env: ["PATH=/bin:/usr/bin"]) {
            case let .success(pid): workers.append(Worker(index: i, pid: pid, counterPath: counter, startedAt: nowNanos()))
            case let .failure(e):
                stop(workers)
                return .failure(e)
            }
        }
        return .success(workers)
    }

    /// CLOCK_MONOTONIC in nanoseconds (the clock workers stamp their progress with).
    static func nowNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// schedstat (cpu ns, wait ns, runs) and `stat` fields 3 (state) and 39 (last CPU) of a
    /// live worker. schedstat's run_delay grows only when the task next runs, so a worker
    /// that is runnable (`R`) and has made no progress since its last stamp is waiting now:
    /// that wait in progress is added (for kinds that block, it may include up to one
    /// sleep — the worker stamps when it wakes and runs, not when it is woken).
    static func sample(_ w: Worker) -> WorkerSample {
        let pid = w.pid
        var s = WorkerSample()
        if let t = Sys.readText("/proc/\(pid)/schedstat", limit: 256) {
            let f = t.split(whereSeparator: { $0 == " " || $0 == "\n" })
            if f.count >= 3 {
                s.cpuNanos = UInt64(f[0]) ?? 0; s.waitNanos = UInt64(f[1]) ?? 0; s.runs = UInt64(f[2]) ?? 0
            }
        }
        // Fields after the comm (which may contain spaces) start after the last ')'.
        if let t = Sys.readText("/proc/\(pid)/stat", limit: 4096), let close = t.lastIndex(of: ")") {
            let rest = t[t.index(after: close)...].split(separator: " ")
            // rest[0] is field 3 (state); field 39 (processor) is rest[36].
            if rest.count > 36 { s.lastCPU = Int(rest[36]) }
            if rest.first == "R" {
                // No stamp yet: starved since it was started (it never reached its loop).
                let stamp = progressStamp(w).flatMap { $0 > 0 ? $0 : nil } ?? w.startedAt
                let now = nowNanos()
                if now > stamp { s.waitNanos &+= now - stamp }
            }
        }
        return s
    }

    /// The worker's last progress stamp (CLOCK_MONOTONIC_COARSE ns, word 1 of its counter file).
    static func progressStamp(_ w: Worker) -> UInt64? {
        guard let b = Sys.read(w.counterPath, limit: 16), b.count == 16 else { return nil }
        return b[8..<16].enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    static func stop(_ workers: [Worker]) {
        for w in workers { kill(w.pid, SIGKILL) }
        for w in workers { _ = Sys.waitFor(w.pid, millis: 5000) }
    }

    static func iterations(_ w: Worker) -> UInt64 {
        guard let b = Sys.read(w.counterPath, limit: 8), b.count == 8 else { return 0 }
        return b.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }
}

/// Entry point of a worker process: `--ktstr-worker <kind> <index> <periodMicros> <cgroupDir>`.
enum WorkerMain {
    static func run(_ args: [String]) -> Never {
        guard args.count >= 5, let index = Int(args[2]), let period = Int(args[3]) else { _exit(2) }
        let name = String("ktstr-\(args[1].prefix(5))\(index)".prefix(15))
        Sys.write("/proc/self/comm", name)
        if !args[4].isEmpty { Sys.write(args[4] + "/cgroup.procs", "0") }

        let fd = open("/tmp/ktstr-w\(index).count", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        // Word 0: work units done; word 1: when the worker last made progress (ns).
        guard fd >= 0, ftruncate(fd, 16) == 0,
              let map = mmap(nil, 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), map != MAP_FAILED else { _exit(3) }
        let counter = map.bindMemory(to: UInt64.self, capacity: 2)
        let progress = counter + 1
        counter.pointee = 0
        func stamp() {
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
            progress.pointee = UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        }
        stamp()

        switch WorkloadKind(rawValue: args[1]) ?? .idle {
        case .spinners:
            while true {
                var x: UInt64 = 0
                for k in 0..<4096 { x = x &* 6364136223846793005 &+ UInt64(k) }
                counter.pointee &+= 1 &+ (x == 42 ? 1 : 0)
                // An opaque libc call makes the compiler store the counter every round (else
                // it keeps it in a register of this never-ending loop) and keeps `x` live.
                var ts = timespec()
                clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
                progress.pointee = UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
            }
        case .sleepers:
            while true {
                usleep(useconds_t(period))
                stamp()
                counter.pointee &+= 1
            }
        case .pingPong:
            let pair = index / 2
            let first = index % 2 == 0
            let ab = "/tmp/ktstr-pp\(pair).ab", ba = "/tmp/ktstr-pp\(pair).ba"
            // Open order avoids a FIFO deadlock: both open `ab` first, then `ba`.
            let wfd = first ? open(ab, O_WRONLY) : -1
            let rfd0 = first ? -1 : open(ab, O_RDONLY)
            let rfd = first ? open(ba, O_RDONLY) : rfd0
            let wfd2 = first ? wfd : open(ba, O_WRONLY)
            guard rfd >= 0, wfd2 >= 0 else { _exit(4) }
            var b: UInt8 = 1
            if first { _ = write(wfd2, &b, 1) }
            while true {
                guard read(rfd, &b, 1) == 1 else { _exit(0) }
                stamp()
                counter.pointee &+= 1
                guard write(wfd2, &b, 1) == 1 else { _exit(0) }
            }
        case .forkStorm:
            while true {
                let child = fork()
                if child == 0 { _exit(0) }
                if child > 0 {
                    var st: Int32 = 0
                    waitpid(child, &st, 0)
                    stamp()
                    counter.pointee &+= 1
                } else {
                    usleep(1000)
                }
            }
        case .idle:
            while true { pause() }
        }
    }
}
