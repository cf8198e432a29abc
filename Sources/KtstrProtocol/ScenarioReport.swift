/// What the agent measured while running a scenario: the `scenario` message (AgentMessage),
/// sent after the run and before `workers`. Field names are the JSON keys.
public struct ScenarioReport: Codable, Sendable, Equatable {
    /// Every phase entered, "start" (implicit) included, in order.
    public var phases: [PhaseSpan]
    public var workers: [WorkerMetrics]
    public var cgroups: [CgroupUsage]
    /// Setup problems (a cpuset write that failed...); each is also sent as a `problem`.
    public var problems: [String]

    public init(phases: [PhaseSpan], workers: [WorkerMetrics], cgroups: [CgroupUsage], problems: [String] = []) {
        self.phases = phases; self.workers = workers; self.cgroups = cgroups; self.problems = problems
    }

    /// Most entries `parse` keeps (the guest is hostile).
    public static let maxWorkers = AgentMessage.maxWorkers
    public static let maxCgroups = Scenario.maxCgroups
    public static let maxPhases = Scenario.maxPhases + 1
    public static let maxCPUs = Scenario.maxCPUs
    public static let maxProblems = 64
}

public struct PhaseSpan: Codable, Sendable, Equatable {
    public var name: String
    /// From the start of the workload.
    public var startMillis: Int
    public var endMillis: Int
    public init(name: String, startMillis: Int, endMillis: Int) { self.name = name; self.startMillis = startMillis; self.endMillis = endMillis }
}

/// One worker process of a scenario.
public struct WorkerMetrics: Codable, Sendable, Equatable {
    /// Agent-wide worker index.
    public var index: Int
    /// Its group's name (`Scenario.groups`).
    public var group: String
    /// Its cgroup at the end ("" = the root).
    public var cgroup: String
    /// A `WorkType` raw value.
    public var work: String
    public var pid: Int
    public var iterations: UInt64
    public var cpuNanos: UInt64
    /// schedstat's run_delay plus the wait in progress when sampled.
    public var runDelayNanos: UInt64
    /// Largest gap between two consecutive progress stamps, including the one from the last
    /// stamp to the end (or to its stop).
    public var maxGapNanos: UInt64
    /// Wake latency (wake-measuring kinds only, `WorkType.measuresWakeLatency`).
    public var wakeP50Nanos: UInt64?
    public var wakeP99Nanos: UInt64?
    public var wakeMaxNanos: UInt64?
    public var wakeSamples: UInt64?
    /// se.nr_migrations from /proc/<pid>/sched (0 when unreadable).
    public var migrations: UInt64
    /// CPUs the worker was seen on at its progress points, ascending.
    public var cpusUsed: [Int]
    public var voluntarySwitches: UInt64
    public var involuntarySwitches: UInt64
    /// One per `ScenarioReport.phases`, same order.
    public var phases: [PhaseSlice]

    public init(index: Int, group: String, cgroup: String, work: String, pid: Int, iterations: UInt64, cpuNanos: UInt64,
                runDelayNanos: UInt64, maxGapNanos: UInt64, wakeP50Nanos: UInt64? = nil, wakeP99Nanos: UInt64? = nil,
                wakeMaxNanos: UInt64? = nil, wakeSamples: UInt64? = nil, migrations: UInt64, cpusUsed: [Int],
                voluntarySwitches: UInt64, involuntarySwitches: UInt64, phases: [PhaseSlice]) {
        self.index = index; self.group = group; self.cgroup = cgroup; self.work = work; self.pid = pid
        self.iterations = iterations; self.cpuNanos = cpuNanos; self.runDelayNanos = runDelayNanos; self.maxGapNanos = maxGapNanos
        self.wakeP50Nanos = wakeP50Nanos; self.wakeP99Nanos = wakeP99Nanos; self.wakeMaxNanos = wakeMaxNanos; self.wakeSamples = wakeSamples
        self.migrations = migrations; self.cpusUsed = cpusUsed; self.voluntarySwitches = voluntarySwitches
        self.involuntarySwitches = involuntarySwitches; self.phases = phases
    }
}

/// A worker's progress within one phase.
public struct PhaseSlice: Codable, Sendable, Equatable {
    public var iterations: UInt64
    public var cpuNanos: UInt64
    public init(iterations: UInt64, cpuNanos: UInt64) { self.iterations = iterations; self.cpuNanos = cpuNanos }
}

/// One scenario cgroup's CPU use (cpu.stat usage_usec, which includes its descendants).
public struct CgroupUsage: Codable, Sendable, Equatable {
    public var path: String
    /// cpu.weight as configured at the end (nil: never set).
    public var weight: Int?
    /// cpuset.cpus.effective at the end.
    public var cpus: String?
    /// usage_usec over the run.
    public var usageMicros: UInt64
    /// usage_usec per `ScenarioReport.phases`, same order.
    public var phases: [UInt64]
    public init(path: String, weight: Int?, cpus: String?, usageMicros: UInt64, phases: [UInt64]) {
        self.path = path; self.weight = weight; self.cpus = cpus; self.usageMicros = usageMicros; self.phases = phases
    }
}

// MARK: JSON (the `scenario` message's fields; optionals written as null)

extension ScenarioReport {
    public var fields: [(String, JSON)] {
        [("phases", .array(phases.map { .object([("name", .string($0.name)), ("startMillis", .int($0.startMillis)), ("endMillis", .int($0.endMillis))]) })),
         ("workers", .array(workers.map(\.json))),
         ("cgroups", .array(cgroups.map { c in
             .object([("path", .string(c.path)), ("weight", c.weight.map(JSON.int) ?? .null), ("cpus", c.cpus.map(JSON.string) ?? .null),
                      ("usageMicros", .uint(c.usageMicros)), ("phases", .array(c.phases.map(JSON.uint)))])
         })),
         ("problems", .array(problems.map(JSON.string)))]
    }

    /// Reads the message's fields: lists bounded, mistyped numbers read as 0, entries that
    /// are not objects dropped.
    public static func from(_ obj: JSON) -> ScenarioReport {
        func objects(_ v: JSON?, _ n: Int) -> [JSON] { (v?.array ?? []).lazy.filter { $0.object != nil }.prefix(n).map { $0 } }
        let phases = objects(obj["phases"], maxPhases).map { p in
            PhaseSpan(name: p["name"]?.string ?? "", startMillis: p["startMillis"]?.int ?? 0, endMillis: p["endMillis"]?.int ?? 0)
        }
        let cgroups = objects(obj["cgroups"], maxCgroups).map { c in
            CgroupUsage(path: c["path"]?.string ?? "", weight: c["weight"]?.int, cpus: c["cpus"]?.string,
                        usageMicros: c["usageMicros"]?.uint64 ?? 0, phases: (c["phases"]?.array ?? []).prefix(maxPhases).map { $0.uint64 ?? 0 })
        }
        let problems = (obj["problems"]?.array ?? []).compactMap(\.string).prefix(maxProblems)
        return ScenarioReport(phases: phases, workers: objects(obj["workers"], maxWorkers).map(WorkerMetrics.from),
                              cgroups: cgroups, problems: Array(problems))
    }
}

extension WorkerMetrics {
    public var json: JSON {
        func opt(_ v: UInt64?) -> JSON { v.map(JSON.uint) ?? .null }
        return .object([
            ("index", .int(index)), ("group", .string(group)), ("cgroup", .string(cgroup)), ("work", .string(work)), ("pid", .int(pid)),
            ("iterations", .uint(iterations)), ("cpuNanos", .uint(cpuNanos)), ("runDelayNanos", .uint(runDelayNanos)),
            ("maxGapNanos", .uint(maxGapNanos)), ("wakeP50Nanos", opt(wakeP50Nanos)), ("wakeP99Nanos", opt(wakeP99Nanos)),
            ("wakeMaxNanos", opt(wakeMaxNanos)), ("wakeSamples", opt(wakeSamples)), ("migrations", .uint(migrations)),
            ("cpusUsed", .array(cpusUsed.map(JSON.int))), ("voluntarySwitches", .uint(voluntarySwitches)),
            ("involuntarySwitches", .uint(involuntarySwitches)),
            ("phases", .array(phases.map { .object([("iterations", .uint($0.iterations)), ("cpuNanos", .uint($0.cpuNanos))]) })),
        ])
    }

    static func from(_ w: JSON) -> WorkerMetrics {
        func u(_ k: String) -> UInt64 { w[k]?.uint64 ?? 0 }
        let cpus = (w["cpusUsed"]?.array ?? []).prefix(ScenarioReport.maxCPUs).compactMap(\.int)
        let phases = (w["phases"]?.array ?? []).filter { $0.object != nil }.prefix(ScenarioReport.maxPhases).map { p in
            PhaseSlice(iterations: p["iterations"]?.uint64 ?? 0, cpuNanos: p["cpuNanos"]?.uint64 ?? 0)
        }
        return WorkerMetrics(index: w["index"]?.int ?? 0, group: w["group"]?.string ?? "", cgroup: w["cgroup"]?.string ?? "",
                             work: w["work"]?.string ?? "", pid: w["pid"]?.int ?? 0, iterations: u("iterations"), cpuNanos: u("cpuNanos"),
                             runDelayNanos: u("runDelayNanos"), maxGapNanos: u("maxGapNanos"), wakeP50Nanos: w["wakeP50Nanos"]?.uint64,
                             wakeP99Nanos: w["wakeP99Nanos"]?.uint64, wakeMaxNanos: w["wakeMaxNanos"]?.uint64,
                             wakeSamples: w["wakeSamples"]?.uint64, migrations: u("migrations"), cpusUsed: cpus,
                             voluntarySwitches: u("voluntarySwitches"), involuntarySwitches: u("involuntarySwitches"), phases: Array(phases))
    }
}
