// The hand-written JSON of a scenario (plan.json's `scenario`, scenario files): the keys are
// the Codable keys, absent optionals are left out as JSONEncoder leaves them out.

extension Scenario {
    public var json: JSON {
        .object([("name", .string(name)), ("cgroups", .array(cgroups.map(\.json))), ("workers", .array(workers.map(\.json))),
                 ("phases", .array(phases.map(\.json))), ("checks", .array(checks.map(\.json)))]
                + optional("durationMillis", durationMillis, JSON.int))
    }

    /// The scenario as JSON text (a file `ktstr run --scenario` reads).
    public func encoded() -> String { json.encoded() }
}

extension ScenarioCgroup {
    public var json: JSON {
        .object([("path", .string(path))] + optional("weight", weight, JSON.int) + optional("cpus", cpus, JSON.string)
                + optional("cpuMax", cpuMax, JSON.string) + [("workers", .array(workers.map(\.json)))])
    }
}

extension ScenarioWorkers {
    public var json: JSON {
        .object(optional("name", name, JSON.string) + [("work", .string(work)), ("count", .int(count))]
                + optional("nice", nice, JSON.int) + optional("policy", policy, JSON.string)
                + optional("periodMicros", periodMicros, JSON.int) + optional("burstMicros", burstMicros, JSON.int)
                + optional("workingSetKiB", workingSetKiB, JSON.int) + optional("fanOut", fanOut, JSON.int))
    }
}

extension ScenarioPhase {
    public var json: JSON {
        .object([("name", .string(name)), ("atMillis", .int(atMillis)), ("actions", .array(actions.map(\.json)))])
    }
}

extension ScenarioAction {
    public var json: JSON {
        .object([("op", .string(op))] + optional("workers", workers, JSON.string) + optional("cgroup", cgroup, JSON.string)
                + optional("value", value, JSON.int) + optional("cpus", cpus, JSON.string) + optional("policy", policy, JSON.string))
    }
}

extension ScenarioCheck {
    public var json: JSON {
        .object([("check", .string(check))] + optional("cgroup", cgroup, JSON.string) + optional("limit", limit, JSON.number))
    }
}

/// `[(key, value)]` when `v` is set, else nothing.
func optional<T>(_ key: String, _ v: T?, _ f: (T) -> JSON) -> [(String, JSON)] {
    v.map { [(key, f($0))] } ?? []
}
