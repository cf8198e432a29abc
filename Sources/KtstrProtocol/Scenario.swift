/// A scheduling scenario (docs/PROTOCOLS.md "Scenarios"): cgroups with weights and cpusets,
/// workers of given work types in them, and phases that change things over time. Built in
/// Swift or read from JSON (`Scenario.decode`, ScenarioDecoding.swift); the agent runs it when
/// `RunPlan.scenario` is set. The synthesized Codable keys are the hand JSON's keys, so a file
/// JSONEncoder writes is read by `decode` and the other way round.
public struct Scenario: Codable, Sendable, Equatable {
    public var name: String
    public var cgroups: [ScenarioCgroup]
    /// Workers in the root cgroup.
    public var workers: [ScenarioWorkers]
    /// Sorted by `atMillis` (`decode` sorts them). An implicit phase "start" begins at 0
    /// unless a phase is at 0 itself.
    public var phases: [ScenarioPhase]
    /// Evaluated on the host only; the agent ignores them.
    public var checks: [ScenarioCheck]
    /// Overrides the run's duration when set.
    public var durationMillis: Int?

    public init(name: String, cgroups: [ScenarioCgroup] = [], workers: [ScenarioWorkers] = [],
                phases: [ScenarioPhase] = [], checks: [ScenarioCheck] = [], durationMillis: Int? = nil) {
        self.name = name; self.cgroups = cgroups; self.workers = workers; self.phases = phases
        self.checks = checks; self.durationMillis = durationMillis
    }

    /// One group of workers with where it lives and its resolved name.
    public struct Group: Sendable, Equatable {
        /// The cgroup path ("" = the root cgroup).
        public var cgroup: String
        public var workers: ScenarioWorkers
        /// `workers.name`, or "<cgroup or root>-<work>-<k>" (k: its position in that cgroup's list).
        public var name: String
    }

    /// Every group of workers, root first, then the cgroups in order, names resolved.
    public var groups: [Group] {
        func list(_ cg: String, _ ws: [ScenarioWorkers]) -> [Group] {
            ws.enumerated().map { k, w in Group(cgroup: cg, workers: w, name: w.name ?? "\(cg.isEmpty ? "root" : cg)-\(w.work)-\(k)") }
        }
        return list("", workers) + cgroups.flatMap { list($0.path, $0.workers) }
    }

    /// Names of groups that a `start` action starts (they are not started at time 0).
    public var startedLater: Set<String> {
        Set(phases.flatMap(\.actions).filter { $0.op == ScenarioAction.Op.start.rawValue }.compactMap(\.workers))
    }
}

public struct ScenarioCgroup: Codable, Sendable, Equatable {
    /// Relative to the cgroup root: "a", "a/b" (no "..", no leading "/"); parents come first.
    public var path: String
    /// cpu.weight, 1...10000.
    public var weight: Int?
    /// cpuset.cpus, e.g. "1" or "0-1".
    public var cpus: String?
    /// cpu.max written verbatim, e.g. "50000 100000".
    public var cpuMax: String?
    public var workers: [ScenarioWorkers]

    public init(path: String, weight: Int? = nil, cpus: String? = nil, cpuMax: String? = nil, workers: [ScenarioWorkers] = []) {
        self.path = path; self.weight = weight; self.cpus = cpus; self.cpuMax = cpuMax; self.workers = workers
    }
}

public struct ScenarioWorkers: Codable, Sendable, Equatable {
    /// The label phase actions use; default "<cgroup or root>-<work>-<k>" (`Scenario.groups`).
    public var name: String?
    /// A `WorkType` raw value (a String, so a newer kind still encodes; `decode` rejects it).
    public var work: String
    /// Processes; for futex/pipe ping-pong pairs, for fan_out parents (each with `fanOut` children).
    public var count: Int
    /// -20...19.
    public var nice: Int?
    /// A `ScenarioPolicy` raw value: "other", "batch" or "idle".
    public var policy: String?
    /// timer_sleep's period, io_wait's wait, the churn kinds' interval.
    public var periodMicros: Int?
    /// Compute between waits (timer_sleep, io_wait, fan_out, ping-pong).
    public var burstMicros: Int?
    /// cache_pressure's and page_fault's working set.
    public var workingSetKiB: Int?
    /// fan_out's children per parent.
    public var fanOut: Int?

    public init(name: String? = nil, work: String, count: Int, nice: Int? = nil, policy: String? = nil,
                periodMicros: Int? = nil, burstMicros: Int? = nil, workingSetKiB: Int? = nil, fanOut: Int? = nil) {
        self.name = name; self.work = work; self.count = count; self.nice = nice; self.policy = policy
        self.periodMicros = periodMicros; self.burstMicros = burstMicros; self.workingSetKiB = workingSetKiB; self.fanOut = fanOut
    }

    public init(name: String? = nil, work: WorkType, count: Int, nice: Int? = nil, policy: ScenarioPolicy? = nil,
                periodMicros: Int? = nil, burstMicros: Int? = nil, workingSetKiB: Int? = nil, fanOut: Int? = nil) {
        self.init(name: name, work: work.rawValue, count: count, nice: nice, policy: policy?.rawValue, periodMicros: periodMicros,
                  burstMicros: burstMicros, workingSetKiB: workingSetKiB, fanOut: fanOut)
    }

    public var workType: WorkType? { WorkType(rawValue: work) }

    /// fan_out's children per parent when not set.
    public static let defaultFanOut = 4

    /// Processes one unit of `count` is: 2 for a ping-pong pair, 1 + fanOut for a fan_out parent.
    public var processesPerUnit: Int {
        switch workType {
        case .futexPingPong, .pipePingPong: 2
        case .fanOut: 1 + (fanOut ?? Self.defaultFanOut)
        default: 1
        }
    }
}

public struct ScenarioPhase: Codable, Sendable, Equatable {
    public var name: String
    /// From the start of the workload (after the scheduler is enabled).
    public var atMillis: Int
    public var actions: [ScenarioAction]

    public init(name: String, atMillis: Int, actions: [ScenarioAction] = []) {
        self.name = name; self.atMillis = atMillis; self.actions = actions
    }
}

public struct ScenarioAction: Codable, Sendable, Equatable {
    public enum Op: String, Sendable, CaseIterable {
        case start, stop, move, nice, affinity, policy, weight
    }
    /// An `Op` raw value.
    public var op: String
    /// A group's name (`Scenario.groups`); every op but "weight".
    public var workers: String?
    /// "move": the destination ("" = root); "weight": the cgroup.
    public var cgroup: String?
    /// "nice": the nice value; "weight": cpu.weight.
    public var value: Int?
    /// "affinity": a CPU list.
    public var cpus: String?
    /// "policy": a `ScenarioPolicy` raw value.
    public var policy: String?

    public init(op: String, workers: String? = nil, cgroup: String? = nil, value: Int? = nil, cpus: String? = nil, policy: String? = nil) {
        self.op = op; self.workers = workers; self.cgroup = cgroup; self.value = value; self.cpus = cpus; self.policy = policy
    }

    public var kind: Op? { Op(rawValue: op) }

    public static func start(_ workers: String) -> Self { .init(op: Op.start.rawValue, workers: workers) }
    public static func stop(_ workers: String) -> Self { .init(op: Op.stop.rawValue, workers: workers) }
    public static func move(_ workers: String, to cgroup: String) -> Self { .init(op: Op.move.rawValue, workers: workers, cgroup: cgroup) }
    public static func nice(_ workers: String, _ value: Int) -> Self { .init(op: Op.nice.rawValue, workers: workers, value: value) }
    public static func affinity(_ workers: String, cpus: String) -> Self { .init(op: Op.affinity.rawValue, workers: workers, cpus: cpus) }
    public static func policy(_ workers: String, _ policy: ScenarioPolicy) -> Self {
        .init(op: Op.policy.rawValue, workers: workers, policy: policy.rawValue)
    }
    public static func weight(_ cgroup: String, _ value: Int) -> Self { .init(op: Op.weight.rawValue, cgroup: cgroup, value: value) }
}

/// A scheduling policy a worker runs under.
public enum ScenarioPolicy: String, Codable, Sendable, CaseIterable {
    case other, batch, idle
}

/// A quality check the host evaluates on the scenario's report (the agent ignores checks).
public struct ScenarioCheck: Codable, Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case noStarvation = "no_starvation", fairnessSpread = "fairness_spread", maxGap = "max_gap"
        case wakeLatencyP99 = "wake_latency_p99", weightShares = "weight_shares"
        case cpusetRespected = "cpuset_respected", maxMigrations = "max_migrations"
    }
    /// A `Kind` raw value.
    public var check: String
    /// Restrict to one cgroup's workers (nil: all).
    public var cgroup: String?
    /// The kind's limit (docs/PROTOCOLS.md "Scenarios" lists the unit of each).
    public var limit: Double?

    public init(check: String, cgroup: String? = nil, limit: Double? = nil) {
        self.check = check; self.cgroup = cgroup; self.limit = limit
    }
    public init(_ kind: Kind, cgroup: String? = nil, limit: Double? = nil) { self.init(check: kind.rawValue, cgroup: cgroup, limit: limit) }

    public var kind: Kind? { Kind(rawValue: check) }

    /// Every worker progressed, and none went `maxGapMillis` (default 2 s) without progress.
    public static func noStarvation(cgroup: String? = nil, maxGapMillis: Double? = nil) -> Self {
        .init(.noStarvation, cgroup: cgroup, limit: maxGapMillis)
    }
    /// max/min CPU time within a group of workers, or within `cgroup`.
    public static func fairnessSpread(max: Double = 1.5, cgroup: String? = nil) -> Self { .init(.fairnessSpread, cgroup: cgroup, limit: max) }
    public static func maxGap(millis: Double) -> Self { .init(.maxGap, limit: millis) }
    public static func wakeLatencyP99(millis: Double) -> Self { .init(.wakeLatencyP99, limit: millis) }
    public static func weightShares(tolerancePoints: Double = 10) -> Self { .init(.weightShares, limit: tolerancePoints) }
    public static let cpusetRespected = Self(.cpusetRespected)
    public static func maxMigrations(_ count: Double) -> Self { .init(.maxMigrations, limit: count) }
}
