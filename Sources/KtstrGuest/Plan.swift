// /ktstr/plan.json, decoded by hand (docs/PROTOCOLS.md "plan.json").

struct Plan {
    struct Scheduler { var path: String; var args: [String]; var name: String }
    struct Workload { var kind: String; var count: Int; var periodMicros: Int?; var cgroup: String? }

    var scheduler: Scheduler?
    var workload: Workload
    var durationMillis: Int
    var kallsyms: [String]
    var attachTimeoutMillis: Int
    /// Hard limit for the whole agent; past it the agent reports a problem and reboots.
    var deadlineMillis: Int

    /// Bounds every number: the plan comes from the host, but a bad one must not hang PID 1.
    static func decode(_ bytes: [UInt8]) -> Result<Plan, PlanError> {
        guard let j = JSON.parse(bytes) else { return .failure(PlanError(text: "plan.json is not valid JSON")) }
        var sched: Scheduler?
        if let s = j["scheduler"], s != .null {
            guard let path = s["path"]?.string else { return .failure(PlanError(text: "plan.json: scheduler.path missing")) }
            let args = (s["args"]?.array ?? []).compactMap(\.string)
            sched = Scheduler(path: path, args: args, name: s["name"]?.string ?? "scheduler")
        }
        let w = j["workload"]
        let kind = w?["kind"]?.string ?? "idle"
        guard ["spinners", "sleepers", "ping_pong", "fork_storm", "idle"].contains(kind) else {
            return .failure(PlanError(text: "plan.json: unknown workload kind '\(kind)'"))
        }
        let workload = Workload(kind: kind, count: min(max(w?["count"]?.int ?? 0, 0), 256),
                                periodMicros: w?["periodMicros"]?.int.map { min(max($0, 1), 10_000_000) },
                                cgroup: w?["cgroup"]?.string)
        if let cg = workload.cgroup, cg.isEmpty || cg.contains("..") || cg.hasPrefix("/") {
            return .failure(PlanError(text: "plan.json: cgroup '\(cg)' must be a relative name without '..'"))
        }
        let duration = min(max(j["durationMillis"]?.int ?? 3000, 0), 3_600_000)
        let attach = min(max(j["attachTimeoutMillis"]?.int ?? 10_000, 100), 600_000)
        let deadline = j["deadlineMillis"]?.int.map { min(max($0, 1000), 7_200_000) } ?? (duration + attach + 60_000)
        let syms = (j["kallsyms"]?.array ?? []).compactMap(\.string).prefix(256)
        return .success(Plan(scheduler: sched, workload: workload, durationMillis: duration, kallsyms: Array(syms),
                             attachTimeoutMillis: attach, deadlineMillis: deadline))
    }

    struct PlanError: Error { var text: String }
}
