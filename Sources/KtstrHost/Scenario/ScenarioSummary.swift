import KtstrProtocol

/// One group of scenario workers (`ScenarioWorkers`), summed: the CLI table's rows.
public struct GroupSummary: Codable, Sendable, Equatable {
    public var group: String
    public var cgroup: String
    public var work: String
    public var workers: Int
    public var iterations: UInt64
    public var cpuMillis: Double
    public var meanRunDelayMillis: Double
    public var maxGapMillis: Double
    /// Largest p99 of its workers; nil for kinds that do not measure wakes.
    public var wakeP99Millis: Double?
    public var maxMigrations: UInt64
    public var cpusUsed: [Int]
}

/// One phase: each group's progress and each cgroup's share within it.
public struct PhaseSummary: Codable, Sendable, Equatable {
    public struct Group: Codable, Sendable, Equatable {
        public var group: String
        public var iterations: UInt64
        public var cpuMillis: Double
    }
    public var name: String
    public var startMillis: Int
    public var endMillis: Int
    public var groups: [Group]
    public var cgroups: [CgroupShare]
}

extension ScenarioReport {
    /// Groups in the order their first worker was reported.
    public var groupSummaries: [GroupSummary] {
        var order: [String] = []
        var members: [String: [WorkerMetrics]] = [:]
        for w in workers {
            if members[w.group] == nil { order.append(w.group) }
            members[w.group, default: []].append(w)
        }
        return order.map { g in
            let ws = members[g]!
            let p99s = ws.compactMap(\.wakeP99Nanos)
            return GroupSummary(
                group: g, cgroup: ws[0].cgroup, work: ws[0].work, workers: ws.count,
                iterations: ws.reduce(0) { $0 &+ $1.iterations },
                cpuMillis: ws.reduce(0.0) { $0 + Double($1.cpuNanos) } / 1e6,
                meanRunDelayMillis: ws.reduce(0.0) { $0 + Double($1.runDelayNanos) } / 1e6 / Double(ws.count),
                maxGapMillis: Double(ws.map(\.maxGapNanos).max() ?? 0) / 1e6,
                wakeP99Millis: p99s.max().map { Double($0) / 1e6 },
                maxMigrations: ws.map(\.migrations).max() ?? 0,
                cpusUsed: Array(Set(ws.flatMap(\.cpusUsed))).sorted())
        }
    }

    /// One entry per phase the agent entered, with the per-worker slices summed by group.
    public var phaseSummaries: [PhaseSummary] {
        let groups = groupSummaries.map(\.group)
        return phases.enumerated().map { i, span in
            let rows = groups.map { g in
                let slices = workers.filter { $0.group == g }.compactMap { i < $0.phases.count ? $0.phases[i] : nil }
                return PhaseSummary.Group(group: g, iterations: slices.reduce(0) { $0 &+ $1.iterations },
                                          cpuMillis: slices.reduce(0.0) { $0 + Double($1.cpuNanos) } / 1e6)
            }
            return PhaseSummary(name: span.name, startMillis: span.startMillis, endMillis: span.endMillis,
                                groups: rows, cgroups: CgroupShares.shares(cgroups, phase: i))
        }
    }

    /// Sum of every worker's iterations (throughput, for comparisons).
    public var totalIterations: UInt64 { workers.reduce(0) { $0 &+ $1.iterations } }
    /// Mean of the workers' run delay, ms (nil without workers).
    public var meanRunDelayMillis: Double? {
        workers.isEmpty ? nil : workers.reduce(0.0) { $0 + Double($1.runDelayNanos) } / 1e6 / Double(workers.count)
    }
    /// Mean of the wake-measuring workers' p99, ms (nil when none measured).
    public var meanWakeP99Millis: Double? {
        let p = workers.compactMap(\.wakeP99Nanos)
        return p.isEmpty ? nil : p.reduce(0.0) { $0 + Double($1) } / 1e6 / Double(p.count)
    }
}
