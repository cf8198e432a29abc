import KtstrProtocol

/// CPU shares of a scenario's cgroups, from the agent's `cpu.stat` usage (which counts a
/// cgroup's descendants too).
public enum CgroupShares {
    /// Every reported cgroup with its share of the scenario's total: the usage summed over the
    /// top-level cgroups (those whose parent is not in the report), so top-level shares add up
    /// to 100 and a child's share is part of its parent's. All zero when nothing was used.
    /// `phase`: the same within one phase (`CgroupUsage.phases`).
    public static func shares(_ usage: [CgroupUsage], phase: Int? = nil) -> [CgroupShare] {
        let paths = Set(usage.map(\.path))
        func used(_ u: CgroupUsage) -> Double {
            guard let phase else { return Double(u.usageMicros) }
            return phase < u.phases.count ? Double(u.phases[phase]) : 0
        }
        let total = usage.filter { !paths.contains(parent(of: $0.path)) }.reduce(0.0) { $0 + used($1) }
        return usage.map { CgroupShare(path: $0.path, weight: $0.weight, cpuShare: total > 0 ? used($0) / total * 100 : 0) }
    }

    /// One cgroup against its weighted siblings: its share of their summed usage and the share
    /// its weight asks for (both in percent).
    public struct SiblingShare: Sendable, Equatable {
        public var path: String
        public var weight: Int
        public var share: Double
        public var weightShare: Double
        public var deviationPoints: Double { abs(share - weightShare) }
    }

    /// Sibling sets (cgroups with the same parent, `parent` when given) in which at least two
    /// cgroups have a weight; each weighted cgroup's share among its weighted siblings. Only the
    /// `phase`-th usage when given (per-phase usage, `CgroupUsage.phases`).
    public static func siblingShares(_ usage: [CgroupUsage], parent only: String? = nil, phase: Int? = nil) -> [[SiblingShare]] {
        var byParent: [String: [CgroupUsage]] = [:]
        for u in usage where u.weight != nil { byParent[parent(of: u.path), default: []].append(u) }
        return byParent.keys.sorted().compactMap { p -> [SiblingShare]? in
            guard only == nil || only == p, let set = byParent[p], set.count >= 2 else { return nil }
            func used(_ u: CgroupUsage) -> Double {
                guard let phase else { return Double(u.usageMicros) }
                return phase < u.phases.count ? Double(u.phases[phase]) : 0
            }
            let totalUsage = set.reduce(0.0) { $0 + used($1) }
            let totalWeight = set.reduce(0.0) { $0 + Double($1.weight ?? 0) }
            return set.map { u in
                SiblingShare(path: u.path, weight: u.weight ?? 0,
                             share: totalUsage > 0 ? used(u) / totalUsage * 100 : 0,
                             weightShare: totalWeight > 0 ? Double(u.weight ?? 0) / totalWeight * 100 : 0)
            }
        }
    }

    /// "a/b" → "a"; "a" → "" (the scenario's root).
    public static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[..<slash])
    }

    /// `path` is `cgroup` or below it ("" holds everything).
    public static func isWithin(_ path: String, _ cgroup: String) -> Bool {
        cgroup.isEmpty || path == cgroup || path.hasPrefix(cgroup + "/")
    }
}
