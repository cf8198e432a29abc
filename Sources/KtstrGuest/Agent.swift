// The agent's run, step by step (docs/PROTOCOLS.md "Agent channel"). Every step is bounded;
// whatever goes wrong is reported as a `problem` and the agent still reboots the VM.
import Glibc
import KtstrProtocol

enum Agent {
    static let schedLog = "/tmp/ktstr-scheduler.log"
    static let statePath = "/sys/kernel/sched_ext/state"

    static func run() -> Never {
        let t0 = Sys.nowMillis()
        for (type, target, flags) in [("proc", "/proc", 0), ("sysfs", "/sys", 0), ("devtmpfs", "/dev", 0),
                                       ("tmpfs", "/tmp", 0)] as [(String, String, Int32)] {
            if let e = Sys.mountFS(type, at: target, flags: UInt(flags)) { Console.say(e) }
        }
        _ = Sys.mountFS("cgroup2", at: "/sys/fs/cgroup")
        _ = Sys.mountFS("debugfs", at: "/sys/kernel/debug")

        if let e = Channel.open() { Console.say("\(e); reporting on the console instead") }
        // A real-time agent is outside sched_ext: a scheduler under test that starves normal
        // tasks cannot stop it from watching, stopping and reporting. It mostly sleeps.
        var rt = sched_param(sched_priority: 1)
        if sched_setscheduler(0, SCHED_FIFO, &rt) != 0 { Console.say("SCHED_FIFO: \(Sys.errnoText())") }
        PlanDelivery.awaitPlanIfSnapshotBoot() // snapshot boot: waits here for the run's files (PlanDelivery.swift)
        guard Sys.exists("/ktstr/ok") else { finish(problem: "/ktstr/ok missing: the initramfs did not unpack completely") }
        guard let bytes = Sys.read("/ktstr/plan.json") else { finish(problem: "cannot read /ktstr/plan.json: \(Sys.errnoText())") }
        let plan: RunPlan
        switch RunPlan.decode(bytes) {
        case let .success(p): plan = p
        case let .failure(e): finish(problem: e.text)
        }
        _ = Sys.rebootFn
        // A shell session lasts as long as its user wants: no deadline unless the plan sets one.
        if plan.shell == nil || plan.deadlineMillis != nil { Deadline.arm(millis: plan.agentDeadlineMillis) }

        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let e = Sys.linkKernelConfig(release: release) { Console.say(e) }
        let syms = PlanDelivery.kallsyms(for: plan.kallsyms) ?? Kallsyms.lookup(plan.kallsyms)
        let addresses = Dictionary(syms.compactMap { name, hex in UInt64(hex, radix: 16).map { (name, $0) } },
                                   uniquingKeysWith: { a, _ in a })
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        Channel.send(.hello(release: release, cpus: cpus, kallsyms: addresses, topology: TopologyReader.read(cpus: cpus)),
                     extra: [("millis", .int(Sys.nowMillis() - t0))])

        var sched: pid_t?
        var exitStatus: Int32?
        if let s = plan.scheduler {
            switch startScheduler(s, attachMillis: plan.attachTimeoutMillis) {
            case let .success(pid): sched = pid
            case let .failure(why):
                // A scheduler whose exit could be read failed as a scheduler (that is the
                // result, also when it enabled and failed between two polls); one that never
                // attached and left no exit failed to load (a typed problem, with its log).
                Console.say(why.text)
                reportExit(plan: plan, status: why.status, attached: why.attachedBriefly, why: why.text)
                finish(problem: nil)
            }
        }

        if let shell = plan.shell { ShellMode.run(plan: plan, shell: shell, scheduler: sched) }
        if let scenario = plan.scenario { ScenarioMode.run(plan: plan, scenario: scenario, scheduler: sched) }

        var workers: [Worker] = []
        switch Workload.start(plan.workload) {
        case let .success(w): workers = w
        case let .failure(e): Channel.problem("workload: \(e.text)")
        }

        // Run for the duration, watching the scheduler: stop early when it exits or detaches.
        let begin = Sys.nowMillis()
        let end = begin + plan.durationMillis
        var samples = workers.map { _ in WorkerSample() }
        var cutShort = false
        while Sys.nowMillis() < end {
            if schedulerStopped(sched, exitStatus: &exitStatus) {
                cutShort = true
                break
            }
            Sys.sleepMillis(50)
        }
        let stoppedAt = Sys.nowMillis()
        for (k, w) in workers.enumerated() { samples[k] = Workload.sample(w) }
        if cutShort, !workers.isEmpty {
            Channel.problem("\(seconds(stoppedAt - begin)) s of the planned \(seconds(plan.durationMillis)) s", kind: .workloadCutShort)
        }
        if let cg = plan.workload.cgroup {
            // Workers move themselves; check they got there (cgroup v2: "0::/<path>").
            let outside = workers.filter { w in
                !(Sys.readText("/proc/\(w.pid)/cgroup", limit: 4096) ?? "").split(separator: "\n").contains { $0 == "0::/\(cg)" }
            }
            if !outside.isEmpty { Channel.problem("workers \(outside.map(\.index)) are not in cgroup \(cg)") }
        }
        Workload.stop(workers)

        if let pid = sched, exitStatus == nil { exitStatus = stopScheduler(pid) }
        if plan.scheduler != nil { reportExit(plan: plan, status: exitStatus) }

        Channel.send(.workers(workers.enumerated().map { k, w in
            let s = samples[k]
            return WorkerStats(index: w.index, pid: Int(w.pid), cpuNanos: s.cpuNanos, waitNanos: s.waitNanos, runs: s.runs,
                               iterations: Workload.iterations(w), lastCPU: s.lastCPU)
        }))
        finish(problem: nil)
    }

    /// True when the scheduler exited (its status goes to `exitStatus`) or sched_ext left
    /// 'enabled': the workload stops early.
    static func schedulerStopped(_ sched: pid_t?, exitStatus: inout Int32?) -> Bool {
        if let pid = sched, exitStatus == nil, let st = Sys.reapIfExited(pid) {
            exitStatus = st
            Console.say("scheduler exited during the run (\(Sys.describe(status: st)))")
            return true
        }
        if sched != nil, schedState() != "enabled" {
            Console.say("sched_ext state left 'enabled' during the run")
            return true
        }
        return false
    }

    struct SchedulerFailure: Error { var text: String; var status: Int32?; var attachedBriefly = false }

    /// /sys/kernel/sched_ext/enable_seq: bumped on every successful enable.
    static func enableSeq() -> Int {
        Sys.readText("/sys/kernel/sched_ext/enable_seq", limit: 64).flatMap { Int($0.prefix { $0 != "\n" }) } ?? -1
    }

    static func schedState() -> String {
        Sys.readText(statePath, limit: 64).map { String($0.prefix { $0 != "\n" }) } ?? "missing"
    }

    static func startScheduler(_ s: RunPlan.Scheduler, attachMillis: Int) -> Result<pid_t, SchedulerFailure> {
        guard Sys.exists(statePath) else {
            return .failure(SchedulerFailure(text: "\(statePath) missing: the kernel has no sched_ext (CONFIG_SCHED_CLASS_EXT)"))
        }
        let t = Sys.nowMillis()
        let seq0 = enableSeq()
        let pid: pid_t
        switch Sys.spawn(s.path, s.args, output: schedLog, env: ["PATH=/bin:/usr/bin", "HOME=/tmp"]) {
        case let .success(p): pid = p
        case let .failure(e): return .failure(SchedulerFailure(text: "scheduler: \(e.text)"))
        }
        Channel.send(.schedulerStarted(pid: Int(pid)))
        while schedState() != "enabled" {
            if let st = Sys.reapIfExited(pid) {
                if seq0 >= 0, enableSeq() > seq0 {
                    Channel.send(.schedulerEnabled(millis: Sys.nowMillis() - t), extra: [("briefly", .bool(true))])
                    return .failure(SchedulerFailure(text: "scheduler exited right after attaching", status: st, attachedBriefly: true))
                }
                return .failure(SchedulerFailure(text: "scheduler died before attaching (\(Sys.describe(status: st)))", status: st))
            }
            if Sys.nowMillis() - t > attachMillis {
                kill(pid, SIGKILL)
                let st = Sys.waitFor(pid, millis: 5000)
                return .failure(SchedulerFailure(text: "scheduler did not attach within \(attachMillis) ms (state \(schedState()))", status: st))
            }
            Sys.sleepMillis(20)
        }
        Channel.send(.schedulerEnabled(millis: Sys.nowMillis() - t))
        return .success(pid)
    }

    /// SIGINT, a bounded wait, then SIGKILL. Returns the wait status when reaped.
    static func stopScheduler(_ pid: pid_t) -> Int32? {
        kill(pid, SIGINT)
        if let st = Sys.waitFor(pid, millis: 10_000) { return st }
        Channel.problem("scheduler ignored SIGINT for 10 s; killing it")
        kill(pid, SIGKILL)
        return Sys.waitFor(pid, millis: 5000)
    }

    /// "1.23": milliseconds as seconds with two decimals.
    static func seconds(_ ms: Int) -> String {
        let cs = max(0, ms) / 10
        let frac = cs % 100
        return "\(cs / 100).\(frac < 10 ? "0" : "")\(frac)"
    }

    /// Sends `sched_exit` (from the loader's output, else the kernel log) and the log tail;
    /// false when no exit information was found. Then a typed problem says why: the scheduler
    /// never attached (`why`: the agent's account) or attached and left no trace of its exit.
    @discardableResult
    static func reportExit(plan: RunPlan, status: Int32?, attached: Bool = true, why: String? = nil) -> Bool {
        // The kernel disables asynchronously after the loader goes away: give it a moment.
        let until = Sys.nowMillis() + 3000
        while Sys.nowMillis() < until, schedState() != "disabled", schedState() != "missing" { Sys.sleepMillis(20) }
        let log = Sys.tail(schedLog, limit: 256 * 1024) ?? ""
        let kmsg = Kmsg.lines()
        let kernel = ExitInfo.fromKernelLog(kmsg)
        var info = ExitInfo.fromKtstrLine(log) ?? ExitInfo.fromUEILine(log) ?? kernel
        // The kernel's line carries the message when the loader printed none.
        if var i = info, i.message.isEmpty, let k = kernel, k.kind == i.kind { i.message = k.message; info = i }
        if let info {
            Channel.send(info.agentMessage)
        } else if attached {
            Channel.problem("no exit information from the scheduler (\(status.map { Sys.describe(status: $0) } ?? "still running"))",
                            kind: .noExitInformation)
        } else {
            Channel.problem(why ?? "the scheduler never attached", kind: .schedulerFailedToLoad)
        }
        let tail = String(log.utf8.suffix(16 * 1024)) ?? ""
        Channel.send(.log(stream: "scheduler", text: tail))
        return info != nil
    }

    static func finish(problem: String?) -> Never {
        if let problem { Channel.problem(problem) }
        Channel.send(.done)
        Sys.restart()
    }
}

/// A hard limit for the whole agent: SIGALRM reports and reboots, whatever the agent is doing.
enum Deadline {
    nonisolated(unsafe) static var message: [UInt8] = []

    static func arm(millis: Int) {
        // Built now: the handler may only write.
        message = Array((AgentMessage.problem("agent deadline of \(millis) ms passed").line() + AgentMessage.done.line()).utf8)
        signal(SIGALRM) { _ in
            Deadline.message.withUnsafeBytes { b in
                if channelFD >= 0 { _ = write(channelFD, b.baseAddress, b.count) }
                _ = write(2, b.baseAddress, b.count)
            }
            Sys.restart()
        }
        alarm(UInt32(max(1, (millis + 999) / 1000)))
    }
}

/// Addresses of named symbols from /proc/kallsyms, as lower-case hex without 0x.
enum Kallsyms {
    static func lookup(_ names: [String]) -> [(String, String)] {
        guard !names.isEmpty else { return [] }
        let wanted = names.map { Array($0.utf8) }
        var found: [Int: String] = [:]
        let fd = open("/proc/kallsyms", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        var carry: [UInt8] = []
        outer: while found.count < wanted.count {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            var chunk = carry
            chunk += buf[0..<n]
            var start = 0
            var i = 0
            while i < chunk.count {
                if chunk[i] == 0x0A {
                    match(chunk, start, i, wanted, &found)
                    start = i + 1
                    if found.count == wanted.count { break outer }
                }
                i += 1
            }
            carry = Array(chunk[start...])
        }
        return found.sorted { $0.key < $1.key }.map { (names[$0.key], $0.value) }
    }

    /// Line: `<16 hex> <type> <name>[\t[module]]`.
    static func match(_ b: [UInt8], _ s: Int, _ e: Int, _ wanted: [[UInt8]], _ found: inout [Int: String]) {
        let nameStart = s + 19
        guard e - s > 19, b[s + 16] == 0x20, b[s + 18] == 0x20 else { return }
        var nameEnd = nameStart
        while nameEnd < e, b[nameEnd] != 0x09, b[nameEnd] != 0x20 { nameEnd += 1 }
        guard nameEnd == e else { return } // module symbols are not wanted
        let len = nameEnd - nameStart
        for (k, w) in wanted.enumerated() where w.count == len && found[k] == nil {
            if b[nameStart..<nameEnd].elementsEqual(w) {
                found[k] = String(decoding: b[s..<s + 16], as: UTF8.self)
            }
        }
    }
}

/// The kernel log, read non-blocking from /dev/kmsg (records `prio,seq,ts,flags;text`).
enum Kmsg {
    static func lines() -> [String] {
        let fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var out: [String] = []
        var buf = [UInt8](repeating: 0, count: 8192)
        while out.count < 100_000 {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EPIPE { continue } // overwritten records: keep reading
            guard n > 0 else { break }
            let rec = buf[0..<n]
            guard let semi = rec.firstIndex(of: UInt8(ascii: ";")) else { continue }
            let text = rec[(semi + 1)...].prefix { $0 != 0x0A }
            out.append(String(decoding: text, as: UTF8.self))
        }
        return out
    }
}
