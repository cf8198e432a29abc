import KtstrProtocol

/// One scenario check evaluated on the host (`ScenarioChecks.evaluate`): what was measured
/// against the limit. `outcome.checks` and `ktstr run --scenario --json` carry these.
public struct CheckResult: Codable, Sendable, Equatable, CustomStringConvertible {
    /// The check's kind (`ScenarioCheck.Kind` raw value), e.g. "weight_shares".
    public var name: String
    public var passed: Bool
    /// In the kind's unit (docs/SCENARIOS.md "Checks"): ms, points, a ratio or a count.
    public var measured: Double
    /// The limit it was held to (the kind's default when the check set none).
    public var limit: Double
    /// The cgroup the check was restricted to, when it was.
    public var cgroup: String?
    /// Who measured what (the worst worker, group or cgroup), or why nothing could be measured.
    public var detail: String

    public init(name: String, passed: Bool, measured: Double, limit: Double, cgroup: String? = nil, detail: String) {
        self.name = name; self.passed = passed; self.measured = measured; self.limit = limit; self.cgroup = cgroup; self.detail = detail
    }

    /// "weight_shares failed: measured 23.1 > limit 10 (cgroup b: 52.0% of CPU, weight share 75.0%)".
    public var description: String {
        let scope = cgroup.map { " [cgroup \($0.isEmpty ? "/" : $0)]" } ?? ""
        let op = passed ? "within" : "against"
        return "\(name)\(scope) \(passed ? "passed" : "failed"): measured \(Self.format(measured)) \(op) limit \(Self.format(limit)) (\(detail))"
    }

    /// Numbers for people: integers without a fraction, others with up to 3 decimals.
    public static func format(_ v: Double) -> String {
        guard v.isFinite else { return "\(v)" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        let scaled = (v * 1000).rounded() / 1000
        return "\(scaled)"
    }
}

/// One scenario cgroup's share of the CPU time all the scenario's cgroups used.
public struct CgroupShare: Codable, Sendable, Equatable {
    public var path: String
    /// cpu.weight at the end of the run (nil: never set, the kernel's default 100).
    public var weight: Int?
    /// Percent of the summed usage of the cgroups listed (a parent's usage includes its
    /// children's, so only leaves are summed: `CgroupShares`).
    public var cpuShare: Double

    public init(path: String, weight: Int?, cpuShare: Double) { self.path = path; self.weight = weight; self.cpuShare = cpuShare }
}
