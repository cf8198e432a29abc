/// One message on the agent's channel (docs/PROTOCOLS.md "Agent channel"): the agent writes
/// it with `line(extra:)`, the host reads it with `parse(_:)`; the type names and fields live
/// only here.
public enum AgentMessage: Sendable, Equatable {
    /// `topology`: what the guest kernel reports (optional fields `l3Groups`, `numaNodes`;
    /// nil from an agent that does not send them).
    case hello(release: String, cpus: Int, kallsyms: [String: UInt64], topology: GuestTopology? = nil)
    case schedulerStarted(pid: Int)
    case schedulerEnabled(millis: Int)
    /// The exit as the agent could read it; `exit.source` is `loader` or `kmsg`.
    case schedulerExit(SchedulerExit)
    case workers([WorkerStats])
    /// A scenario's measurements (RunPlan.scenario), sent after the run and before `workers`.
    case scenario(ScenarioReport)
    case log(stream: String, text: String)
    /// Something that went wrong; `kind` says what, for the host to decide on (never the text).
    case problem(String, kind: AgentProblemKind? = nil)
    case done
    /// Plan mode `shell`: the shell exited with `status` (its exit code, or 128 + the signal
    /// that killed it), sent after the console's end marker and before the scheduler stops.
    case shellExit(status: Int)
    /// Snapshot boot (`ktstr.snapshot=1`): the agent has said hello and now blocks on the
    /// plan port; the host saves the VM at this point.
    case ready
    /// A restored agent got its plan request, reseeded the kernel's RNG and set the clock;
    /// `random` is hex of 16 getrandom() bytes drawn after the reseed (tests check that two
    /// restores of one snapshot differ). Sent before the run's hello.
    case restored(random: String)
    /// A well-formed message of a type this host does not know (newer agent).
    case unknown(type: String)

    public static let prefix = "@ktstr "
    /// Longest line accepted; longer input is dropped as garbage (the guest is hostile).
    public static let maxLineBytes = 256 * 1024
    /// Most workers one `workers` message yields.
    public static let maxWorkers = 4096

    /// The `type` field of each case.
    private enum Tag: String {
        case hello, schedStarted = "sched_started", schedEnabled = "sched_enabled", schedExit = "sched_exit"
        case workers, scenario, log, problem, done, shellExit = "shell_exit", ready, restored
    }

    /// Parses one line; nil for anything that is not a valid `@ktstr {json}` message.
    /// Console noise before the prefix is skipped; missing or mistyped fields read as 0 or "".
    public static func parse(_ line: Substring) -> AgentMessage? {
        guard line.utf8.count <= maxLineBytes, let r = line.find(prefix),
              let obj = JSON.parse(line[r.upperBound...]), obj.object != nil,
              let type = obj["type"]?.string else { return nil }
        func str(_ k: String) -> String { obj[k]?.string ?? "" }
        switch Tag(rawValue: type) {
        case .hello:
            var syms: [String: UInt64] = [:]
            for (k, v) in obj["kallsyms"]?.object ?? [] {
                if let s = v.string, let a = UInt64(s, radix: 16) { syms[k] = a }
            }
            return .hello(release: str("release"), cpus: obj["cpus"]?.int ?? 0, kallsyms: syms, topology: GuestTopology.from(obj))
        case .schedStarted: return .schedulerStarted(pid: obj["pid"]?.int ?? 0)
        case .schedEnabled: return .schedulerEnabled(millis: obj["millis"]?.int ?? 0)
        case .schedExit:
            let kind = ExitKind(str("kind"))
            let exit = SchedulerExit(kind: kind, kindValue: obj["kindValue"]?.int ?? kind.value,
                                     code: obj["code"]?.int64, reason: str("reason"), message: str("message"),
                                     source: ExitSource(rawValue: str("source")))
            return .schedulerExit(exit)
        case .workers:
            let list = (obj["workers"]?.array ?? []).filter { $0.object != nil }.prefix(maxWorkers)
            return .workers(list.map { w in
                WorkerStats(index: w["index"]?.int ?? 0, pid: w["pid"]?.int ?? 0, cpuNanos: w["cpuNanos"]?.uint64 ?? 0,
                            waitNanos: w["waitNanos"]?.uint64 ?? 0, runs: w["runs"]?.uint64 ?? 0,
                            iterations: w["iterations"]?.uint64 ?? 0, lastCPU: w["lastCPU"]?.int)
            })
        case .scenario: return .scenario(ScenarioReport.from(obj))
        case .log: return .log(stream: str("stream"), text: str("text"))
        case .problem: return .problem(str("message"), kind: AgentProblemKind(rawValue: str("kind")))
        case .done: return .done
        case .shellExit: return .shellExit(status: obj["status"]?.int ?? -1)
        case .ready: return .ready
        case .restored: return .restored(random: String(str("random").prefix(256)))
        case nil: return .unknown(type: type)
        }
    }

    /// The message as JSON, `type` first. `extra` fields go last: the agent sends a few the
    /// host does not model (hello's `millis`, sched_enabled's `briefly`); readers ignore them.
    public func json(extra: [(String, JSON)] = []) -> JSON {
        let (type, fields): (String, [(String, JSON)])
        switch self {
        case let .hello(release, cpus, kallsyms, topology):
            let syms = kallsyms.sorted { $0.key < $1.key }.map { ($0.key, JSON.string(String($0.value, radix: 16))) }
            (type, fields) = (Tag.hello.rawValue, [("release", .string(release)), ("cpus", .int(cpus)), ("kallsyms", .object(syms))]
                                 + (topology?.fields ?? []))
        case let .schedulerStarted(pid): (type, fields) = (Tag.schedStarted.rawValue, [("pid", .int(pid))])
        case let .schedulerEnabled(millis): (type, fields) = (Tag.schedEnabled.rawValue, [("millis", .int(millis))])
        case let .schedulerExit(e):
            (type, fields) = (Tag.schedExit.rawValue, [
                ("kind", .string(e.kind.name)), ("kindValue", e.kindValue.map(JSON.int) ?? .null),
                ("code", e.code.map { JSON.number(Double($0)) } ?? .null),
                ("reason", .string(e.reason)), ("message", .string(e.message)), ("source", .string(e.source?.rawValue ?? "")),
            ])
        case let .workers(list):
            (type, fields) = (Tag.workers.rawValue, [("workers", .array(list.map { w in
                .object([("index", .int(w.index)), ("pid", .int(w.pid)), ("cpuNanos", .uint(w.cpuNanos)),
                         ("waitNanos", .uint(w.waitNanos)), ("runs", .uint(w.runs)), ("iterations", .uint(w.iterations)),
                         ("lastCPU", w.lastCPU.map(JSON.int) ?? .null)])
            }))])
        case let .scenario(report): (type, fields) = (Tag.scenario.rawValue, report.fields)
        case let .log(stream, text): (type, fields) = (Tag.log.rawValue, [("stream", .string(stream)), ("text", .string(text))])
        case let .problem(message, kind):
            (type, fields) = (Tag.problem.rawValue, [("message", .string(message))] + (kind.map { [("kind", JSON.string($0.rawValue))] } ?? []))
        case .done: (type, fields) = (Tag.done.rawValue, [])
        case let .shellExit(status): (type, fields) = (Tag.shellExit.rawValue, [("status", .int(status))])
        case .ready: (type, fields) = (Tag.ready.rawValue, [])
        case let .restored(random): (type, fields) = (Tag.restored.rawValue, [("random", .string(random))])
        case let .unknown(t): (type, fields) = (t, [])
        }
        return .object([("type", .string(type))] + fields + extra)
    }

    /// One channel line: `@ktstr {json}\n`.
    public func line(extra: [(String, JSON)] = []) -> String { Self.prefix + json(extra: extra).encoded() + "\n" }
}

/// What a `problem` is about, when the agent knows (absent: a problem of the run in general).
public enum AgentProblemKind: String, Sendable, Equatable, CaseIterable {
    /// The scheduler never attached: it died, failed to load or did not attach in time
    /// (message: the agent's account; the scheduler's log follows in `log`).
    case schedulerFailedToLoad = "scheduler_failed_to_load"
    /// The scheduler exited before the planned duration and the workload was stopped
    /// (message: "<ran> s of the planned <planned> s").
    case workloadCutShort = "workload_cut_short"
    /// The scheduler attached, and neither its output nor the kernel log said how it exited.
    case noExitInformation = "no_exit_information"
}
