import KtstrProtocol

/// Evaluates a scenario's checks on the agent's report (docs/SCENARIOS.md "Checks"). Each
/// check gives one `CheckResult`; a check that has nothing to measure (no worker in its
/// cgroup, no weighted siblings, no limit where one is needed) fails and says why, so a typo
/// never passes silently.
public enum ScenarioChecks {
    /// `no_starvation`'s gap limit when the check sets none.
    public static let defaultStarvationGapMillis = 2000.0
    /// `fairness_spread`'s max/min when the check sets none.
    public static let defaultFairnessSpread = 1.5
    /// `weight_shares`' tolerance in percentage points when the check sets none.
    public static let defaultWeightTolerancePoints = 10.0

    public static func evaluate(_ checks: [ScenarioCheck], report: ScenarioReport, scenario: Scenario) -> [CheckResult] {
        checks.map { evaluate($0, report: report, scenario: scenario) }
    }

    public static func evaluate(_ check: ScenarioCheck, report: ScenarioReport, scenario: Scenario) -> CheckResult {
        let workers = report.workers.filter { w in check.cgroup.map { CgroupShares.isWithin(w.cgroup, $0) } ?? true }
        func result(_ passed: Bool, _ measured: Double, _ limit: Double, _ detail: String) -> CheckResult {
            CheckResult(name: check.check, passed: passed, measured: measured, limit: limit, cgroup: check.cgroup, detail: detail)
        }
        func unmeasured(_ why: String, limit: Double = 0) -> CheckResult { result(false, 0, check.limit ?? limit, why) }
        let scope = check.cgroup.map { "in cgroup '\($0)'" } ?? "in the scenario"
        guard let kind = check.kind else {
            return unmeasured("unknown check '\(check.check)' (known: \(ScenarioCheck.Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        if kind != .weightShares, workers.isEmpty {
            return unmeasured("no workers reported \(scope)")
        }
        switch kind {
        case .noStarvation:
            let gapLimit = check.limit ?? defaultStarvationGapMillis
            let fewest = workers.min { $0.iterations < $1.iterations }!
            let longest = workers.max { $0.maxGapNanos < $1.maxGapNanos }!
            let gap = millis(longest.maxGapNanos)
            let passed = fewest.iterations > 0 && gap < gapLimit
            let detail = fewest.iterations == 0
                ? "\(name(fewest)) made no progress"
                : "fewest iterations \(fewest.iterations) (\(name(fewest))); longest gap \(CheckResult.format(gap)) ms (\(name(longest))) against \(CheckResult.format(gapLimit)) ms"
            // measured: the fewest iterations; limit: the gap bound (the spec's table).
            return result(passed, Double(fewest.iterations), gapLimit, detail)

        case .fairnessSpread:
            let limit = check.limit ?? defaultFairnessSpread
            // One set per group, or the whole cgroup when the check names one.
            let sets: [(String, [WorkerMetrics])] = check.cgroup != nil
                ? [("cgroup '\(check.cgroup!)'", workers)]
                : Dictionary(grouping: workers, by: \.group).sorted { $0.key < $1.key }.map { ("group '\($0.key)'", $0.value) }
            var worst: (spread: Double, detail: String) = (1, "every group has a single worker")
            for (label, set) in sets where set.count >= 2 {
                let hi = set.max { $0.cpuNanos < $1.cpuNanos }!, lo = set.min { $0.cpuNanos < $1.cpuNanos }!
                // A worker with no CPU time at all: the max in ns over 1 ns (huge, finite, JSON-safe).
                let spread = Double(hi.cpuNanos) / Double(max(lo.cpuNanos, 1))
                if spread >= worst.spread {
                    worst = (spread, "\(label): \(name(hi)) \(CheckResult.format(millis(hi.cpuNanos))) ms CPU, \(name(lo)) \(CheckResult.format(millis(lo.cpuNanos))) ms")
                }
            }
            return result(worst.spread <= limit, worst.spread, limit, worst.detail)

        case .maxGap:
            guard let limit = check.limit else { return unmeasured("max_gap needs a limit in ms") }
            let longest = workers.max { $0.maxGapNanos < $1.maxGapNanos }!
            let gap = millis(longest.maxGapNanos)
            return result(gap <= limit, gap, limit, "longest gap without progress: \(name(longest))")

        case .wakeLatencyP99:
            guard let limit = check.limit else { return unmeasured("wake_latency_p99 needs a limit in ms") }
            let measuring = workers.filter { $0.wakeP99Nanos != nil && ($0.wakeSamples ?? 1) > 0 }
            guard let worst = measuring.max(by: { $0.wakeP99Nanos! < $1.wakeP99Nanos! }) else {
                return unmeasured("no worker \(scope) measured wake latency (futex/pipe ping-pong, timer_sleep, io_wait, fan_out do)")
            }
            let p99 = millis(worst.wakeP99Nanos!)
            return result(p99 <= limit, p99, limit, "largest p99 of \(measuring.count) wake-measuring workers: \(name(worst)) (\(worst.wakeSamples ?? 0) wakes)")

        case .weightShares:
            let limit = check.limit ?? defaultWeightTolerancePoints
            let sets = CgroupShares.siblingShares(report.cgroups, parent: check.cgroup)
            guard let worst = sets.joined().max(by: { $0.deviationPoints < $1.deviationPoints }) else {
                return unmeasured("no two sibling cgroups with a cpu.weight \(scope)", limit: limit)
            }
            let all = sets.joined().map { "\($0.path) \(pct($0.share)) (weight \($0.weight): \(pct($0.weightShare)))" }.joined(separator: ", ")
            return result(worst.deviationPoints <= limit, worst.deviationPoints, limit, all)

        case .cpusetRespected:
            // The CPUs each worker's (final) cgroup allows: cpuset.cpus.effective as the agent
            // read it, else the scenario's cpuset of the cgroup and its ancestors.
            var outside = 0, checked = 0
            var offenders: [String] = []
            for w in workers {
                guard let allowed = allowedCPUs(cgroup: w.cgroup, report: report, scenario: scenario) else { continue }
                checked += 1
                let bad = w.cpusUsed.filter { !allowed.contains($0) }
                if !bad.isEmpty {
                    outside += bad.count
                    offenders.append("\(name(w)) ran on \(GuestTopology.list(bad)) outside \(GuestTopology.list(allowed))")
                }
            }
            guard checked > 0 else { return unmeasured("no worker \(scope) is in a cgroup with cpus set") }
            return result(outside == 0, Double(outside), 0,
                          offenders.isEmpty ? "\(checked) workers stayed inside their cpusets" : offenders.prefix(4).joined(separator: "; "))

        case .maxMigrations:
            guard let limit = check.limit else { return unmeasured("max_migrations needs a limit (a count)") }
            let most = workers.max { $0.migrations < $1.migrations }!
            return result(Double(most.migrations) <= limit, Double(most.migrations), limit, "most migrations: \(name(most))")
        }
    }

    /// nil: the scenario sets no cpus on the cgroup or its ancestors. Otherwise what the kernel
    /// enforced (cpuset.cpus.effective, as the agent read it at the end), else the intersection
    /// of the cpus the scenario set along the path.
    static func allowedCPUs(cgroup: String, report: ScenarioReport, scenario: Scenario) -> Set<Int>? {
        var configured: Set<Int>?
        var path = cgroup
        while !path.isEmpty {
            if let list = scenario.cgroups.first(where: { $0.path == path })?.cpus, let cpus = GuestTopology.cpus(list) {
                configured = configured.map { $0.intersection(cpus) } ?? Set(cpus)
            }
            path = CgroupShares.parent(of: path)
        }
        guard let configured else { return nil }
        if let eff = report.cgroups.first(where: { $0.path == cgroup })?.cpus, let cpus = GuestTopology.cpus(eff), !cpus.isEmpty {
            return Set(cpus)
        }
        return configured
    }

    static func millis(_ nanos: UInt64) -> Double { Double(nanos) / 1e6 }
    static func pct(_ v: Double) -> String { CheckResult.format((v * 10).rounded() / 10) + "%" }
    static func name(_ w: WorkerMetrics) -> String { "\(w.group)#\(w.index) (pid \(w.pid))" }
}
