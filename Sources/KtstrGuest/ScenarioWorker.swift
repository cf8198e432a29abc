// A scenario worker process: the agent re-executes itself as
// `--ktstr-scenario-worker key=value...` (WorkerConfig.arguments); the worker joins its
// cgroup, takes its policy and nice, maps its counter file and runs its work type.
import Glibc
import KtstrProtocol

extension WorkerConfig {
    static let flag = "--ktstr-scenario-worker"

    /// The command line after the program name.
    var arguments: [String] {
        var a = [Self.flag, "index=\(index)", "work=\(work.rawValue)", "role=\(role)", "rendezvous=\(rendezvous)",
                 "cgroup=\(cgroupDir)", "fanOut=\(fanOut)", "dir=\(dir)"]
        if let nice { a.append("nice=\(nice)") }
        if let policy { a.append("policy=\(policy.rawValue)") }
        if let periodMicros { a.append("period=\(periodMicros)") }
        if let burstMicros { a.append("burst=\(burstMicros)") }
        if let workingSetKiB { a.append("workingSet=\(workingSetKiB)") }
        return a
    }

    /// Reads `arguments` back; nil when the index or work type is missing or unknown.
    init?(arguments args: [String]) {
        var kv: [String: String] = [:]
        for a in args.dropFirst() {
            guard let eq = a.firstIndex(of: "=") else { return nil }
            kv[String(a[..<eq])] = String(a[a.index(after: eq)...])
        }
        guard args.first == Self.flag, let index = kv["index"].flatMap({ Int($0) }), index >= 0,
              let work = kv["work"].flatMap(WorkType.init(rawValue:)) else { return nil }
        self.init(index: index, work: work, role: kv["role"] ?? "", rendezvous: kv["rendezvous"] ?? "", cgroupDir: kv["cgroup"] ?? "",
                  nice: kv["nice"].flatMap { Int($0) }, policy: kv["policy"].flatMap(ScenarioPolicy.init(rawValue:)),
                  periodMicros: kv["period"].flatMap { Int($0) }, burstMicros: kv["burst"].flatMap { Int($0) },
                  workingSetKiB: kv["workingSet"].flatMap { Int($0) }, fanOut: kv["fanOut"].flatMap { Int($0) } ?? ScenarioWorkers.defaultFanOut,
                  dir: kv["dir"] ?? "/tmp")
    }
}

enum ScenarioWorker {
    static func run(_ args: [String]) -> Never {
        guard let cfg = WorkerConfig(arguments: args) else { _exit(2) }
        Sys.write("/proc/self/comm", String("ktstr-\(cfg.work.rawValue.prefix(5))\(cfg.index)".prefix(15)))
        guard let c = WorkerCounters.create(cfg.counterPath) else { _exit(3) }
        if !cfg.cgroupDir.isEmpty, Cgroups.writeFile(cfg.cgroupDir + "/cgroup.procs", "0") != nil { c.fail(.cgroup) }
        if let p = cfg.policy, !SchedCalls.setPolicy(0, p) { c.fail(.policy) }
        if let n = cfg.nice, !SchedCalls.setNice(0, n) { c.fail(.nice) }
        WorkTypes.run(cfg, c)
    }
}
