import KtstrMachine
import KtstrProtocol

/// Assertions on a scenario run. Each records one issue per failed check at the caller's line
/// and quotes what was measured against the limit.
extension RunOutcome {
    /// Every check of the scenario passed. No checks at all (not a scenario run, or a scenario
    /// without checks) is an issue too: a quality test must measure something.
    public func expectChecksPass(sourceLocation: SourceLocation = #_sourceLocation) {
        guard let checks, !checks.isEmpty else {
            Issue.record("no checks were evaluated (\(scenario == nil ? "no scenario report" : "the scenario has no checks"); \(exitSummary))",
                         sourceLocation: sourceLocation)
            return
        }
        for c in checks where !c.passed {
            Issue.record("check \(c)", sourceLocation: sourceLocation)
        }
    }

    /// The check of this kind passed (`cgroup`: the one restricted to that cgroup).
    public func expectCheckPasses(_ kind: ScenarioCheck.Kind, cgroup: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        expectCheck(kind, cgroup: cgroup, passed: true, sourceLocation: sourceLocation)
    }

    /// The check of this kind failed — for tests proving that a check catches a bad scheduler.
    /// A check that was never evaluated is an issue, not a failure that counts.
    public func expectCheckFails(_ kind: ScenarioCheck.Kind, cgroup: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        expectCheck(kind, cgroup: cgroup, passed: false, sourceLocation: sourceLocation)
    }

    private func expectCheck(_ kind: ScenarioCheck.Kind, cgroup: String?, passed: Bool, sourceLocation: SourceLocation) {
        guard let c = check(kind, cgroup: cgroup) else {
            Issue.record("the outcome has no \(kind.rawValue) check\(cgroup.map { " for cgroup '\($0)'" } ?? "") (checks: \((checks ?? []).map(\.name))); \(exitSummary)",
                         sourceLocation: sourceLocation)
            return
        }
        if scenario == nil {
            Issue.record("\(kind.rawValue) was not measured: no scenario report (\(exitSummary))", sourceLocation: sourceLocation)
        } else if c.passed != passed {
            Issue.record("expected \(kind.rawValue) to \(passed ? "pass" : "fail"), but \(c)", sourceLocation: sourceLocation)
        }
    }

    /// Every scenario worker made progress (iterations > 0) and got CPU time, and every
    /// requested process was reported.
    public func expectEveryScenarioWorkerProgressed(sourceLocation: SourceLocation = #_sourceLocation) {
        guard let r = scenario else {
            Issue.record("no scenario report (\(exitSummary))", sourceLocation: sourceLocation)
            return
        }
        if r.workers.isEmpty { Issue.record("the scenario report has no workers (\(exitSummary))", sourceLocation: sourceLocation) }
        if let requested = requestedWorkers, r.workers.count != requested {
            Issue.record("\(r.workers.count) of the \(requested) scenario processes reported (\(exitSummary))", sourceLocation: sourceLocation)
        }
        let stuck = r.workers.filter { $0.iterations == 0 || $0.cpuNanos == 0 }
        if !stuck.isEmpty {
            Issue.record("workers that made no progress: \(stuck.map { "\($0.group)#\($0.index) (\($0.work), pid \($0.pid), \($0.iterations) iterations, \($0.cpuNanos / 1_000_000) ms CPU)" }.joined(separator: ", "))",
                         sourceLocation: sourceLocation)
        }
    }
}

extension ScenarioComparison {
    /// The scheduler did at least `fraction` of the baseline's work (0.9: within 10% of EEVDF).
    public func expectThroughput(atLeast fraction: Double, sourceLocation: SourceLocation = #_sourceLocation) {
        expectRatio("throughput", ratios.throughput, atLeast: fraction, sourceLocation: sourceLocation)
    }

    /// Mean run delay at most `factor` × the baseline's.
    public func expectRunDelay(atMost factor: Double, sourceLocation: SourceLocation = #_sourceLocation) {
        expectRatio("run delay", ratios.runDelay, atMost: factor, sourceLocation: sourceLocation)
    }

    /// Mean p99 wake latency at most `factor` × the baseline's.
    public func expectWakeLatencyP99(atMost factor: Double, sourceLocation: SourceLocation = #_sourceLocation) {
        expectRatio("wake latency p99", ratios.wakeLatencyP99, atMost: factor, sourceLocation: sourceLocation)
    }

    private func expectRatio(_ name: String, _ ratio: Double?, atLeast low: Double? = nil, atMost high: Double? = nil,
                             sourceLocation: SourceLocation) {
        guard let ratio else {
            Issue.record("no \(name) ratio: scheduler \(scheduler.exitSummary); baseline \(baseline.exitSummary)", sourceLocation: sourceLocation)
            return
        }
        if let low, ratio < low {
            Issue.record("\(name) ratio \(CheckResult.format(ratio)) (scheduler ÷ baseline) is below \(CheckResult.format(low))", sourceLocation: sourceLocation)
        }
        if let high, ratio > high {
            Issue.record("\(name) ratio \(CheckResult.format(ratio)) (scheduler ÷ baseline) is above \(CheckResult.format(high))", sourceLocation: sourceLocation)
        }
    }
}
