import Foundation
import Synchronization
import KtstrTesting

/// The scenario assertions record one issue per failed check, quoting measured and limit, and
/// never pass silently when nothing was measured (no VM: synthetic outcomes).
@Suite struct ScenarioExpectationTests {
    static func outcome(checks: [CheckResult], report: Bool = true) -> RunOutcome {
        var o = RunOutcome(backend: .qemuTCG, wallMillis: 1)
        o.checks = checks
        if report {
            o.scenario = ScenarioReport(phases: [], workers: [
                WorkerMetrics(index: 0, group: "g", cgroup: "", work: "spin", pid: 5, iterations: 9, cpuNanos: 9, runDelayNanos: 0,
                              maxGapNanos: 0, migrations: 0, cpusUsed: [0], voluntarySwitches: 0, involuntarySwitches: 0, phases: []),
            ], cgroups: [])
        }
        return o
    }

    static let weight = CheckResult(name: "weight_shares", passed: false, measured: 25.3, limit: 10, detail: "light 50.3%")
    static let gap = CheckResult(name: "max_gap", passed: false, measured: 812, limit: 500, detail: "g#0")
    static let fine = CheckResult(name: "no_starvation", passed: true, measured: 9, limit: 2000, detail: "ok")

    /// Counts the issues `body` records and checks each against `expected` texts.
    static func issues(_ body: () -> Void) -> [String] {
        let seen = Mutex<[String]>([])
        withKnownIssue { body() } matching: { issue in
            seen.withLock { $0.append(String(describing: issue)) }
            return true
        }
        return seen.withLock { $0 }
    }

    @Test func oneIssuePerFailedCheckQuotingMeasuredAndLimit() {
        let o = Self.outcome(checks: [Self.weight, Self.fine, Self.gap])
        let recorded = Self.issues { o.expectChecksPass() }
        #expect(recorded.count == 2, "\(recorded)")
        #expect(recorded.contains { $0.contains("weight_shares failed: measured 25.3 against limit 10") }, "\(recorded)")
        #expect(recorded.contains { $0.contains("max_gap failed: measured 812 against limit 500") }, "\(recorded)")
        Self.outcome(checks: [Self.fine]).expectChecksPass()
    }

    @Test func noChecksIsAnIssue() {
        #expect(Self.issues { Self.outcome(checks: []).expectChecksPass() }.count == 1)
        #expect(Self.issues { RunOutcome(backend: .qemuTCG, wallMillis: 1).expectChecksPass() }.count == 1)
    }

    @Test func expectCheckFailsAndPasses() {
        let o = Self.outcome(checks: [Self.weight, Self.fine])
        o.expectCheckFails(.weightShares)
        o.expectCheckPasses(.noStarvation)
        #expect(Self.issues { o.expectCheckPasses(.weightShares) }.count == 1)
        #expect(Self.issues { o.expectCheckFails(.noStarvation) }.count == 1)
        // Absent, or failed only because there was no report: not the failure a test wants.
        #expect(Self.issues { o.expectCheckFails(.maxGap) }.count == 1)
        #expect(Self.issues { Self.outcome(checks: [Self.weight], report: false).expectCheckFails(.weightShares) }.count == 1)
    }

    @Test func comparisonRatioBounds() {
        var a = Self.outcome(checks: []), b = a
        a.scenario?.workers[0].iterations = 80
        b.scenario?.workers[0].iterations = 100
        let c = ScenarioComparison(scheduler: a, baseline: b)
        c.expectThroughput(atLeast: 0.8)
        #expect(Self.issues { c.expectThroughput(atLeast: 0.9) }.count == 1)
        // Run delays are zero on both sides: no ratio is an issue, not a pass.
        #expect(Self.issues { c.expectRunDelay(atMost: 2) }.count == 1)
    }
}
