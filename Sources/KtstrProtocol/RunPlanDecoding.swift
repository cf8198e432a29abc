// The agent's reading of plan.json. Every number is clamped: the plan comes from the host,
// but a bad one must not hang PID 1 or fork it to death.

extension RunPlan {
    public struct DecodeError: Error, Equatable, CustomStringConvertible {
        public var text: String
        public var description: String { text }
    }

    /// Bounds `decode` clamps to.
    public static let maxWorkers = 256
    public static let maxKallsyms = 256

    /// Decodes and validates plan.json: absent fields take defaults, numbers are clamped,
    /// an unknown workload kind or an unsafe cgroup name is an error; a `scenario` is read by
    /// `Scenario.decode` (its clamps and errors, ScenarioDecoding.swift).
    public static func decode(_ bytes: [UInt8]) -> Result<RunPlan, DecodeError> {
        func fail(_ text: String) -> Result<RunPlan, DecodeError> { .failure(DecodeError(text: "plan.json: " + text)) }
        guard let j = JSON.parse(bytes), j.object != nil else { return fail("not a JSON object") }
        var sched: Scheduler?
        if let s = j["scheduler"], s != .null {
            guard let path = s["path"]?.string else { return fail("scheduler.path missing") }
            let args = (s["args"]?.array ?? []).compactMap(\.string)
            sched = Scheduler(path: path, args: args, name: s["name"]?.string ?? "scheduler")
        }
        let w = j["workload"]
        let kind = w?["kind"]?.string ?? WorkloadKind.idle.rawValue
        guard WorkloadKind(rawValue: kind) != nil else { return fail("unknown workload kind '\(kind)'") }
        let workload = Workload(kind: kind, count: clamp(w?["count"]?.int ?? 0, 0, maxWorkers),
                                periodMicros: w?["periodMicros"]?.int.map { clamp($0, 1, 10_000_000) },
                                cgroup: w?["cgroup"]?.string)
        if let cg = workload.cgroup, cg.isEmpty || cg.contains("..") || cg.hasPrefix("/") {
            return fail("cgroup '\(cg)' must be a relative name without '..'")
        }
        let duration = clamp(j["durationMillis"]?.int ?? 3000, 0, 3_600_000)
        let attach = clamp(j["attachTimeoutMillis"]?.int ?? 10_000, 100, 600_000)
        let deadline = j["deadlineMillis"]?.int.map { clamp($0, 1000, 7_200_000) }
        let syms = (j["kallsyms"]?.array ?? []).compactMap(\.string).prefix(maxKallsyms)
        var plan = RunPlan(scheduler: sched, workload: workload, durationMillis: duration, kallsyms: Array(syms),
                           attachTimeoutMillis: attach, deadlineMillis: deadline)
        switch j["mode"]?.string ?? "run" {
        case "run": break
        case "shell":
            let s = j["shell"]
            plan.shell = Shell(command: s?["command"]?.string, term: s?["term"]?.string.map { String($0.prefix(64)) },
                               rows: s?["rows"]?.int.map { clamp($0, 1, 1000) }, columns: s?["columns"]?.int.map { clamp($0, 1, 1000) })
        case let other: return fail("unknown mode '\(other)' (run, shell)")
        }
        if let sc = j["scenario"], sc != .null {
            switch Scenario.decode(sc) {
            case let .success(s): plan.scenario = s
            case let .failure(e): return fail(e.text)
            }
        }
        return .success(plan)
    }

    private static func clamp(_ v: Int, _ lo: Int, _ hi: Int) -> Int { min(max(v, lo), hi) }
}
