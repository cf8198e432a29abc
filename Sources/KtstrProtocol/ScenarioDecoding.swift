// Reading a scenario (plan.json's `scenario`, a file for `ktstr run --scenario`): lists and
// numbers are clamped to what the agent can run, and what it cannot run (an unknown work type,
// op or policy, an unsafe cgroup path, a name no group has) is an error saying what to fix.

extension Scenario {
    /// Bounds `decode` clamps to (lists are cut, worker counts reduced to fit).
    public static let maxCgroups = 64
    /// Processes in all: a ping-pong pair counts 2, a fan_out parent 1 + fanOut.
    public static let maxProcesses = RunPlan.maxWorkers
    public static let maxPhases = 32
    public static let maxActions = 32
    public static let maxChecks = 64
    public static let maxDepth = 8
    public static let maxNameBytes = 64
    /// CPUs a cpu list may name (ids 0..<maxCPUs; the workers' CPU bitmask holds as many).
    public static let maxCPUs = 1024
    public static let maxFanOut = 64
    /// Largest working set (KiB) a worker maps: 256 MiB.
    public static let maxWorkingSetKiB = 256 * 1024
    public static let maxMillis = 3_600_000

    /// Reads a scenario file's bytes.
    public static func decode(_ bytes: [UInt8]) -> Result<Scenario, RunPlan.DecodeError> {
        guard let j = JSON.parse(bytes), j.object != nil else { return .failure(.init(text: "scenario: not a JSON object")) }
        return decode(j)
    }

    public static func decode(_ j: JSON) -> Result<Scenario, RunPlan.DecodeError> {
        do { return .success(try ScenarioReader().scenario(j)) } catch { return .failure(error) }
    }
}

private struct ScenarioReader {
    typealias Fail = RunPlan.DecodeError

    func fail(_ text: String) -> Fail { Fail(text: "scenario: " + text) }

    func clamp(_ v: Int, _ lo: Int, _ hi: Int) -> Int { min(max(v, lo), hi) }

    func name(_ v: JSON?, _ what: String, default d: String? = nil) throws(Fail) -> String? {
        guard let v, v != .null else { return d }
        guard let s = v.string else { throw fail("\(what) must be a string") }
        guard !s.isEmpty, s.utf8.count <= Scenario.maxNameBytes, !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw fail("\(what) '\(s.prefix(80))' must be 1...\(Scenario.maxNameBytes) bytes without control characters")
        }
        return s
    }

    func cpuList(_ v: JSON?, _ what: String) throws(Fail) -> String? {
        guard let v, v != .null else { return nil }
        guard let s = v.string, s.utf8.count <= 4096, let cpus = GuestTopology.cpus(s), !cpus.isEmpty,
              cpus.allSatisfy({ $0 < Scenario.maxCPUs }) else {
            throw fail("\(what) '\(String(describing: v.string ?? "?").prefix(80))' is not a CPU list like \"1\" or \"0-1,3\" (CPUs below \(Scenario.maxCPUs))")
        }
        return s
    }

    /// A cgroup path as the agent creates it: relative, components of [A-Za-z0-9._-] not
    /// starting with '.', at most `maxDepth` deep.
    func path(_ s: String, _ what: String) throws(Fail) -> String {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        let ok = !s.isEmpty && parts.count <= Scenario.maxDepth && parts.allSatisfy { p in
            !p.isEmpty && !p.hasPrefix(".") && p.utf8.count <= Scenario.maxNameBytes
                && p.unicodeScalars.allSatisfy { c in ("0"..."9").contains(c) || ("a"..."z").contains(c) || ("A"..."Z").contains(c) || "._-".unicodeScalars.contains(c) }
        }
        guard ok else {
            throw fail("\(what) '\(s.prefix(80))' must be a relative cgroup path like \"a\" or \"a/b\": no leading '/', no '..', "
                       + "names of letters, digits, '.', '_', '-' (not starting with '.'), at most \(Scenario.maxDepth) deep")
        }
        return s
    }

    func cpuMax(_ v: JSON?, _ what: String) throws(Fail) -> String? {
        guard let v, v != .null else { return nil }
        let s = v.string ?? ""
        let parts = s.split(separator: " ", omittingEmptySubsequences: false)
        let digits: (Substring) -> Bool = { !$0.isEmpty && $0.count <= 19 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
        guard (1...2).contains(parts.count), parts[0] == "max" || digits(parts[0]), parts.count == 1 || digits(parts[1]) else {
            throw fail("\(what) '\(s.prefix(80))' must be cpu.max's format: \"max\" or \"QUOTA PERIOD\" in µs, e.g. \"50000 100000\"")
        }
        return s
    }

    func workers(_ v: JSON?, _ at: String, budget: inout Int) throws(Fail) -> [ScenarioWorkers] {
        guard let list = v?.array else { return [] }
        var out: [ScenarioWorkers] = []
        for (k, w) in list.enumerated() {
            let what = "\(at)[\(k)]"
            guard w.object != nil else { throw fail("\(what) must be an object") }
            guard let work = w["work"]?.string else { throw fail("\(what).work missing (one of \(WorkType.allCases.map(\.rawValue).joined(separator: ", ")))") }
            guard WorkType(rawValue: work) != nil else {
                throw fail("\(what).work '\(work.prefix(80))' is not a work type (one of \(WorkType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let policy = w["policy"]?.string
            if let p = policy, ScenarioPolicy(rawValue: p) == nil {
                throw fail("\(what).policy '\(p.prefix(80))' is not a policy (other, batch, idle)")
            }
            var g = ScenarioWorkers(name: try name(w["name"], "\(what).name"), work: work, count: clamp(w["count"]?.int ?? 1, 0, Scenario.maxProcesses),
                                    nice: w["nice"]?.int.map { clamp($0, -20, 19) }, policy: policy,
                                    periodMicros: w["periodMicros"]?.int.map { clamp($0, 1, 10_000_000) },
                                    burstMicros: w["burstMicros"]?.int.map { clamp($0, 0, 10_000_000) },
                                    workingSetKiB: w["workingSetKiB"]?.int.map { clamp($0, 4, Scenario.maxWorkingSetKiB) },
                                    fanOut: w["fanOut"]?.int.map { clamp($0, 1, Scenario.maxFanOut) })
            // Every process counts against the agent's limit; later groups get what is left.
            g.count = min(g.count, budget / g.processesPerUnit)
            budget -= g.count * g.processesPerUnit
            out.append(g)
        }
        return out
    }

    func scenario(_ j: JSON) throws(Fail) -> Scenario {
        guard j.object != nil else { throw fail("must be an object") }
        var budget = Scenario.maxProcesses
        var s = Scenario(name: try name(j["name"], "name", default: "scenario") ?? "scenario")
        s.workers = try workers(j["workers"], "workers", budget: &budget)
        var paths = Set<String>()
        for (k, c) in (j["cgroups"]?.array ?? []).prefix(Scenario.maxCgroups).enumerated() {
            let what = "cgroups[\(k)]"
            guard c.object != nil, let p = c["path"]?.string else { throw fail("\(what).path missing") }
            let path = try path(p, "\(what).path")
            guard !paths.contains(path) else { throw fail("\(what).path '\(path)' is listed twice") }
            if let slash = path.find("/", backwards: true) {
                let parent = String(path[..<slash.lowerBound])
                guard paths.contains(parent) else { throw fail("\(what).path '\(path)': list its parent '\(parent)' before it") }
            }
            paths.insert(path)
            s.cgroups.append(ScenarioCgroup(path: path, weight: c["weight"]?.int.map { clamp($0, 1, 10_000) },
                                            cpus: try cpuList(c["cpus"], "\(what).cpus"), cpuMax: try cpuMax(c["cpuMax"], "\(what).cpuMax"),
                                            workers: try workers(c["workers"], "\(what).workers", budget: &budget)))
        }
        // cgroup v2 puts processes only in leaves (a cgroup with controllers enabled for its
        // children takes none).
        let parents = Set(s.cgroups.compactMap { c in c.path.find("/", backwards: true).map { String(c.path[..<$0.lowerBound]) } })
        if let c = s.cgroups.first(where: { !$0.workers.isEmpty && parents.contains($0.path) }) {
            throw fail("cgroup '\(c.path)' has workers and child cgroups; cgroup v2 runs processes only in leaves (move its workers into a child such as '\(c.path)/w')")
        }
        let groups = s.groups
        var names = Set<String>()
        for g in groups {
            guard names.insert(g.name).inserted else { throw fail("two groups of workers are named '\(g.name)'; give them distinct names") }
            guard g.name.utf8.count <= Scenario.maxNameBytes else { throw fail("the worker name '\(g.name)' is over \(Scenario.maxNameBytes) bytes; set a shorter name") }
        }
        var phases: [(Int, ScenarioPhase)] = []
        for (k, p) in (j["phases"]?.array ?? []).prefix(Scenario.maxPhases).enumerated() {
            let what = "phases[\(k)]"
            guard p.object != nil else { throw fail("\(what) must be an object") }
            var phase = ScenarioPhase(name: try name(p["name"], "\(what).name", default: "phase\(k + 1)") ?? "",
                                      atMillis: clamp(p["atMillis"]?.int ?? 0, 0, Scenario.maxMillis))
            for (a, act) in (p["actions"]?.array ?? []).prefix(Scenario.maxActions).enumerated() {
                phase.actions.append(try action(act, "\(what).actions[\(a)]", names: names, paths: paths, parents: parents))
            }
            phases.append((k, phase))
        }
        s.phases = phases.sorted { ($0.1.atMillis, $0.0) < ($1.1.atMillis, $1.0) }.map(\.1)
        for (k, c) in (j["checks"]?.array ?? []).prefix(Scenario.maxChecks).enumerated() {
            let what = "checks[\(k)]"
            guard let kind = c["check"]?.string, ScenarioCheck.Kind(rawValue: kind) != nil else {
                throw fail("\(what).check '\((c["check"]?.string ?? "missing").prefix(80))' is not a check (one of \(ScenarioCheck.Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            let cg = c["cgroup"]?.string
            if let cg, !paths.contains(cg) { throw fail("\(what).cgroup '\(cg.prefix(80))' is not a cgroup of the scenario") }
            s.checks.append(ScenarioCheck(check: kind, cgroup: cg, limit: c["limit"].flatMap { if case let .number(d) = $0 { d } else { nil } }))
        }
        s.durationMillis = j["durationMillis"]?.int.map { clamp($0, 0, Scenario.maxMillis) }
        return s
    }

    func action(_ a: JSON, _ what: String, names: Set<String>, paths: Set<String>, parents: Set<String>) throws(Fail) -> ScenarioAction {
        guard a.object != nil, let opText = a["op"]?.string, let op = ScenarioAction.Op(rawValue: opText) else {
            throw fail("\(what).op '\((a["op"]?.string ?? "missing").prefix(80))' is not an op (one of \(ScenarioAction.Op.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        var out = ScenarioAction(op: opText)
        if op != .weight {
            guard let w = a["workers"]?.string, names.contains(w) else {
                throw fail("\(what) (\(opText)): workers '\((a["workers"]?.string ?? "missing").prefix(80))' names no group of workers")
            }
            out.workers = w
        }
        switch op {
        case .start, .stop: break
        case .move:
            guard let cg = a["cgroup"]?.string, cg.isEmpty || paths.contains(cg) else {
                throw fail("\(what) (move): cgroup '\((a["cgroup"]?.string ?? "missing").prefix(80))' is not a cgroup of the scenario (\"\" is the root)")
            }
            guard !parents.contains(cg) else { throw fail("\(what) (move): cgroup '\(cg)' has child cgroups; cgroup v2 runs processes only in leaves") }
            out.cgroup = cg
        case .nice:
            guard let v = a["value"]?.int else { throw fail("\(what) (nice): value missing (-20...19)") }
            out.value = clamp(v, -20, 19)
        case .weight:
            guard let cg = a["cgroup"]?.string, paths.contains(cg) else {
                throw fail("\(what) (weight): cgroup '\((a["cgroup"]?.string ?? "missing").prefix(80))' is not a cgroup of the scenario")
            }
            guard let v = a["value"]?.int else { throw fail("\(what) (weight): value missing (1...10000)") }
            out.cgroup = cg
            out.value = clamp(v, 1, 10_000)
        case .affinity:
            guard let cpus = try cpuList(a["cpus"], "\(what).cpus") else { throw fail("\(what) (affinity): cpus missing") }
            out.cpus = cpus
        case .policy:
            guard let p = a["policy"]?.string, ScenarioPolicy(rawValue: p) != nil else {
                throw fail("\(what) (policy): policy '\((a["policy"]?.string ?? "missing").prefix(80))' is not one of other, batch, idle")
            }
            out.policy = p
        }
        return out
    }
}
