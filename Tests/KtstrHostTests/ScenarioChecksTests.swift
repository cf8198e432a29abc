import Foundation
import Testing
@testable import KtstrProtocol
@testable import KtstrHost

/// Check evaluation on synthetic scenario reports: every check kind on a passing and a failing
/// report, the defaults, and checks that have nothing to measure (which fail, saying why).
@Suite struct ScenarioChecksTests {
    static func worker(_ index: Int, group: String, cgroup: String = "", work: String = "spin", iterations: UInt64 = 1000,
                       cpuMillis: UInt64 = 1000, runDelayMillis: UInt64 = 10, gapMillis: UInt64 = 20, wakeP99Millis: UInt64? = nil,
                       migrations: UInt64 = 3, cpus: [Int] = [0, 1], phases: [PhaseSlice] = []) -> WorkerMetrics {
        WorkerMetrics(index: index, group: group, cgroup: cgroup, work: work, pid: 100 + index, iterations: iterations,
                      cpuNanos: cpuMillis * 1_000_000, runDelayNanos: runDelayMillis * 1_000_000, maxGapNanos: gapMillis * 1_000_000,
                      wakeP50Nanos: wakeP99Millis.map { $0 * 500_000 }, wakeP99Nanos: wakeP99Millis.map { $0 * 1_000_000 },
                      wakeMaxNanos: wakeP99Millis.map { $0 * 2_000_000 }, wakeSamples: wakeP99Millis.map { _ in 500 },
                      migrations: migrations, cpusUsed: cpus, voluntarySwitches: 1, involuntarySwitches: 2, phases: phases)
    }

    /// Two cgroups at weights 100/300, two spinners each, with the given CPU use per cgroup.
    static func weights(light: UInt64, heavy: UInt64) -> (Scenario, ScenarioReport) {
        let s = Scenario(name: "weights", cgroups: [
            ScenarioCgroup(path: "light", weight: 100, workers: [ScenarioWorkers(name: "light-spin", work: .spin, count: 2)]),
            ScenarioCgroup(path: "heavy", weight: 300, workers: [ScenarioWorkers(name: "heavy-spin", work: .spin, count: 2)]),
        ], checks: [.weightShares(), .noStarvation()])
        let r = ScenarioReport(phases: [PhaseSpan(name: "start", startMillis: 0, endMillis: 4000)], workers: [
            worker(0, group: "light-spin", cgroup: "light", cpuMillis: light / 2), worker(1, group: "light-spin", cgroup: "light", cpuMillis: light / 2),
            worker(2, group: "heavy-spin", cgroup: "heavy", cpuMillis: heavy / 2), worker(3, group: "heavy-spin", cgroup: "heavy", cpuMillis: heavy / 2),
        ], cgroups: [
            CgroupUsage(path: "light", weight: 100, cpus: "0-1", usageMicros: light * 1000, phases: [light * 1000]),
            CgroupUsage(path: "heavy", weight: 300, cpus: "0-1", usageMicros: heavy * 1000, phases: [heavy * 1000]),
        ])
        return (s, r)
    }

    static func eval(_ check: ScenarioCheck, _ s: Scenario, _ r: ScenarioReport) -> CheckResult {
        ScenarioChecks.evaluate(check, report: r, scenario: s)
    }

    @Test func weightSharesPassAt25To75AndFailAtHalfAndHalf() {
        let (s, good) = Self.weights(light: 2000, heavy: 6000)
        let pass = Self.eval(.weightShares(), s, good)
        #expect(pass.passed && pass.measured == 0 && pass.limit == 10, "\(pass)")
        #expect(CgroupShares.shares(good.cgroups) == [CgroupShare(path: "light", weight: 100, cpuShare: 25),
                                                       CgroupShare(path: "heavy", weight: 300, cpuShare: 75)])
        let (_, even) = Self.weights(light: 4000, heavy: 4000)
        let fail = Self.eval(.weightShares(), s, even)
        #expect(!fail.passed && fail.measured == 25, "\(fail)")
        #expect(fail.description.contains("measured 25 against limit 10"), "\(fail)")
        // A tolerance wide enough lets the same report pass.
        #expect(Self.eval(.weightShares(tolerancePoints: 30), s, even).passed)
    }

    @Test func weightSharesCompareSiblingsOnly() {
        // "g/a" and "g/b" are siblings under g; "solo" has no weighted sibling; g's usage includes its children.
        let usage = [CgroupUsage(path: "g", weight: nil, cpus: nil, usageMicros: 4000, phases: []),
                     CgroupUsage(path: "g/a", weight: 100, cpus: nil, usageMicros: 1000, phases: []),
                     CgroupUsage(path: "g/b", weight: 300, cpus: nil, usageMicros: 3000, phases: []),
                     CgroupUsage(path: "solo", weight: 500, cpus: nil, usageMicros: 4000, phases: [])]
        let sets = CgroupShares.siblingShares(usage)
        #expect(sets.count == 1 && sets[0].map(\.path) == ["g/a", "g/b"] && sets[0].map(\.share) == [25, 75])
        // Shares of the whole: top-level g and solo sum to 100; children are parts of g's.
        #expect(CgroupShares.shares(usage).map(\.cpuShare) == [50, 12.5, 37.5, 50])
        let r = ScenarioReport(phases: [], workers: [], cgroups: usage)
        let s = Scenario(name: "nested")
        #expect(Self.eval(.weightShares(), s, r).passed)
        #expect(Self.eval(ScenarioCheck(.weightShares, cgroup: "g"), s, r).passed)
        let none = Self.eval(ScenarioCheck(.weightShares, cgroup: "solo"), s, r)
        #expect(!none.passed && none.detail.contains("no two sibling cgroups"), "\(none)")
    }

    @Test func noStarvationFailsOnAWorkerWithoutProgressOrALongGap() {
        let (s, r) = Self.weights(light: 2000, heavy: 6000)
        #expect(Self.eval(.noStarvation(), s, r).passed)
        var starved = r
        starved.workers[1].iterations = 0
        let a = Self.eval(.noStarvation(), s, starved)
        #expect(!a.passed && a.measured == 0 && a.detail.contains("light-spin#1"), "\(a)")
        var gappy = r
        gappy.workers[2].maxGapNanos = 2_500_000_000
        let b = Self.eval(.noStarvation(), s, gappy)
        #expect(!b.passed && b.measured == 1000 && b.limit == 2000, "\(b)")
        #expect(Self.eval(.noStarvation(maxGapMillis: 3000), s, gappy).passed)
        // Restricted to the other cgroup, the gap does not count.
        #expect(Self.eval(.noStarvation(cgroup: "light"), s, gappy).passed)
    }

    @Test func fairnessSpreadPerGroupAndPerCgroup() {
        let (s, r) = Self.weights(light: 2000, heavy: 6000)
        // Within each group the two spinners are equal, though the groups are not.
        let even = Self.eval(.fairnessSpread(), s, r)
        #expect(even.passed && even.measured == 1 && even.limit == 1.5, "\(even)")
        // Over the whole of nothing-but-cgroup "light" it is still even...
        #expect(Self.eval(.fairnessSpread(cgroup: "light"), s, r).passed)
        // ...and a favoured worker makes it 2.
        var unfair = r
        unfair.workers[2].cpuNanos = 4_000_000_000
        unfair.workers[3].cpuNanos = 2_000_000_000
        let f = Self.eval(.fairnessSpread(), s, unfair)
        #expect(!f.passed && f.measured == 2 && f.detail.contains("heavy-spin"), "\(f)")
        // A worker that never ran: a huge, finite ratio (JSON-safe), failing.
        unfair.workers[3].cpuNanos = 0
        let z = Self.eval(.fairnessSpread(), s, unfair)
        #expect(!z.passed && z.measured.isFinite && z.measured >= 1e9, "\(z)")
    }

    @Test func maxGapNeedsALimitAndHoldsWorkersToIt() {
        let (s, r) = Self.weights(light: 2000, heavy: 6000)
        #expect(Self.eval(.maxGap(millis: 100), s, r).passed)
        let fail = Self.eval(.maxGap(millis: 10), s, r)
        #expect(!fail.passed && fail.measured == 20, "\(fail)")
        let noLimit = Self.eval(ScenarioCheck(.maxGap), s, r)
        #expect(!noLimit.passed && noLimit.detail.contains("needs a limit"))
    }

    @Test func wakeLatencyUsesOnlyWakeMeasuringWorkers() {
        let s = Scenario(name: "lat")
        let r = ScenarioReport(phases: [], workers: [
            Self.worker(0, group: "hogs"),
            Self.worker(1, group: "ping", work: "futex_ping_pong", wakeP99Millis: 3),
            Self.worker(2, group: "ping", work: "futex_ping_pong", wakeP99Millis: 7),
        ], cgroups: [])
        let pass = Self.eval(.wakeLatencyP99(millis: 10), s, r)
        #expect(pass.passed && pass.measured == 7, "\(pass)")
        #expect(!Self.eval(.wakeLatencyP99(millis: 5), s, r).passed)
        let onlySpin = ScenarioReport(phases: [], workers: [Self.worker(0, group: "hogs")], cgroups: [])
        let none = Self.eval(.wakeLatencyP99(millis: 5), s, onlySpin)
        #expect(!none.passed && none.detail.contains("measured wake latency"), "\(none)")
    }

    @Test func cpusetRespectedCountsCPUsOutsideTheCgroupsCpuset() {
        let s = Scenario(name: "cpuset", cgroups: [
            ScenarioCgroup(path: "pinned", cpus: "1", workers: [ScenarioWorkers(name: "p", work: .spin, count: 2)]),
            ScenarioCgroup(path: "free", workers: [ScenarioWorkers(name: "f", work: .spin, count: 1)]),
        ])
        func report(_ pinnedCPUs: [Int]) -> ScenarioReport {
            ScenarioReport(phases: [], workers: [
                Self.worker(0, group: "p", cgroup: "pinned", cpus: [1]), Self.worker(1, group: "p", cgroup: "pinned", cpus: pinnedCPUs),
                Self.worker(2, group: "f", cgroup: "free", cpus: [0, 1]),
            ], cgroups: [CgroupUsage(path: "pinned", weight: nil, cpus: "1", usageMicros: 1, phases: []),
                         CgroupUsage(path: "free", weight: nil, cpus: "0-1", usageMicros: 1, phases: [])])
        }
        let pass = Self.eval(.cpusetRespected, s, report([1]))
        #expect(pass.passed && pass.measured == 0 && pass.detail.contains("2 workers"), "\(pass)")
        let fail = Self.eval(.cpusetRespected, s, report([0, 1]))
        #expect(!fail.passed && fail.measured == 1 && fail.detail.contains("ran on 0 outside 1"), "\(fail)")
        // No cpuset anywhere: nothing to check is a failure that says so.
        let none = Self.eval(.cpusetRespected, Scenario(name: "x"), report([0]))
        #expect(!none.passed && none.detail.contains("no worker"), "\(none)")
        // Without the agent's effective list, the scenario's own cpus (and its ancestors') decide.
        var noEffective = report([0, 1])
        noEffective.cgroups = []
        #expect(!Self.eval(.cpusetRespected, s, noEffective).passed)
    }

    @Test func maxMigrations() {
        let (s, r) = Self.weights(light: 2000, heavy: 6000)
        #expect(Self.eval(.maxMigrations(3), s, r).passed)
        let f = Self.eval(.maxMigrations(2), s, r)
        #expect(!f.passed && f.measured == 3)
    }

    @Test func unknownCheckAndEmptyScopeFail() {
        let (s, r) = Self.weights(light: 2000, heavy: 6000)
        let unknown = Self.eval(ScenarioCheck(check: "vibes"), s, r)
        #expect(!unknown.passed && unknown.detail.contains("unknown check"))
        let empty = Self.eval(.noStarvation(cgroup: "nowhere"), s, r)
        #expect(!empty.passed && empty.detail.contains("no workers reported in cgroup 'nowhere'"), "\(empty)")
    }

    @Test func phaseSummariesSplitProgressByPhase() {
        let spans = [PhaseSpan(name: "start", startMillis: 0, endMillis: 1500), PhaseSpan(name: "b-joins", startMillis: 1500, endMillis: 3000)]
        let r = ScenarioReport(phases: spans, workers: [
            Self.worker(0, group: "a", cgroup: "a", phases: [PhaseSlice(iterations: 10, cpuNanos: 1_500_000_000), PhaseSlice(iterations: 5, cpuNanos: 750_000_000)]),
            Self.worker(1, group: "b", cgroup: "b", phases: [PhaseSlice(iterations: 0, cpuNanos: 0), PhaseSlice(iterations: 5, cpuNanos: 750_000_000)]),
        ], cgroups: [CgroupUsage(path: "a", weight: 100, cpus: nil, usageMicros: 2_250_000, phases: [1_500_000, 750_000]),
                     CgroupUsage(path: "b", weight: 100, cpus: nil, usageMicros: 750_000, phases: [0, 750_000])])
        let p = r.phaseSummaries
        #expect(p.map(\.name) == ["start", "b-joins"])
        #expect(p[0].groups.map(\.iterations) == [10, 0] && p[1].groups.map(\.iterations) == [5, 5])
        #expect(p[0].cgroups.map(\.cpuShare) == [100, 0] && p[1].cgroups.map(\.cpuShare) == [50, 50])
        let g = r.groupSummaries
        #expect(g.map(\.group) == ["a", "b"] && g[0].iterations == 1000 && g[0].cpuMillis == 1000)
    }

    @Test func outcomeWithoutAReportFailsEveryCheck() {
        let (s, _) = Self.weights(light: 1, heavy: 1)
        var o = RunOutcome(backend: .qemuTCG, wallMillis: 1)
        o.applyScenario(s)
        #expect(o.checks?.count == 2 && o.checks?.allSatisfy { !$0.passed && $0.detail.contains("no scenario report") } == true)
        #expect(o.problems.contains { $0.kind == .scenarioNotReported })
        #expect(o.requestedWorkers == 4)
    }

    @Test func outcomeJSONCarriesCgroupsAndChecks() throws {
        let (s, r) = Self.weights(light: 2000, heavy: 6000)
        var o = RunOutcome(backend: .qemuTCG, wallMillis: 1)
        o.scenario = r
        o.applyScenario(s)
        let json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(o)) as? [String: Any])
        let cgroups = try #require(json["cgroups"] as? [[String: Any]])
        #expect(cgroups.map { $0["path"] as? String } == ["light", "heavy"])
        #expect(cgroups.map { $0["cpuShare"] as? Double } == [25, 75] && cgroups[0]["weight"] as? Int == 100)
        let checks = try #require(json["checks"] as? [[String: Any]])
        #expect(checks.map { $0["name"] as? String } == ["weight_shares", "no_starvation"])
        #expect(checks.allSatisfy { $0["passed"] as? Bool == true && $0["measured"] is Double && $0["limit"] is Double })
        let back = try JSONDecoder().decode(RunOutcome.self, from: JSONEncoder().encode(o))
        #expect(back.checks == o.checks && back.cgroups == o.cgroups && back.scenario == r)
        #expect(ScenarioTable.render(o).contains("2 of 2 checks passed"))
    }

    @Test func comparisonRatios() {
        let (_, a) = Self.weights(light: 2000, heavy: 6000)
        var b = a
        for i in b.workers.indices { b.workers[i].iterations *= 2; b.workers[i].runDelayNanos /= 2 }
        let r = ScenarioComparison.Ratios(scheduler: a, baseline: b)
        #expect(r.throughput == 0.5 && r.runDelay == 2 && r.wakeLatencyP99 == nil)
        #expect(ScenarioComparison.Ratios(scheduler: a, baseline: nil) == .init(throughput: nil, runDelay: nil, wakeLatencyP99: nil))
    }

    @Test func everyExampleScenarioLoads() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Examples/scenarios").path
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".json") }.sorted()
        #expect(files.count >= 5 && files.contains("weights.json"), "\(files)")
        for f in files {
            let s = try Scenario.load(path: dir + "/" + f)
            #expect(!s.checks.isEmpty && s.durationMillis != nil, "\(f)")
        }
        let w = try Scenario.load(path: dir + "/weights.json")
        #expect(w.cgroups.map(\.weight) == [100, 300] && w.requestedProcesses == 4 && w.durationMillis == 4000)
        let every = try Scenario.load(path: dir + "/every-work-type.json")
        #expect(Set(every.groups.compactMap(\.workers.workType)) == Set(WorkType.allCases), "every-work-type.json misses a kind")
        #expect(throws: SchedulerRun.RunError.self) { try Scenario.load(path: dir + "/missing.json") }
    }

    /// Hostile reports (any numbers, lists of any length, zeros, maxima): evaluation never
    /// traps and every measured value is finite (so the outcome's JSON always encodes).
    @Test func checksOnRandomReportsNeverTrap() throws {
        var rng = SplitMix64(seed: 0x5CE7_A210)
        let kinds = ScenarioCheck.Kind.allCases
        let s = Scenario(name: "fuzz", cgroups: [ScenarioCgroup(path: "a", weight: 1, cpus: "1"), ScenarioCgroup(path: "a/b", weight: 10_000, cpus: "0-3"),
                                                 ScenarioCgroup(path: "c", weight: 100)])
        func pick(_ rng: inout SplitMix64) -> UInt64 { [0, 1, UInt64.max, UInt64.max / 2, rng.next() % 10_000_000_000].randomElement(using: &rng)! }
        for i in 0..<Fuzz.iterations {
            let n = Int(rng.next() % 6)
            let workers = (0..<n).map { k in
                WorkerMetrics(index: k, group: ["g", "h", ""].randomElement(using: &rng)!, cgroup: ["", "a", "a/b", "c", "zz"].randomElement(using: &rng)!,
                              work: "spin", pid: k, iterations: pick(&rng), cpuNanos: pick(&rng), runDelayNanos: pick(&rng), maxGapNanos: pick(&rng),
                              wakeP99Nanos: Bool.random(using: &rng) ? pick(&rng) : nil, wakeSamples: Bool.random(using: &rng) ? pick(&rng) : nil,
                              migrations: pick(&rng), cpusUsed: (0..<Int(rng.next() % 4)).map { _ in Int(rng.next() % 1024) },
                              voluntarySwitches: 0, involuntarySwitches: 0,
                              phases: (0..<Int(rng.next() % 3)).map { _ in PhaseSlice(iterations: pick(&rng), cpuNanos: pick(&rng)) })
            }
            let cgroups = (0..<Int(rng.next() % 4)).map { _ in
                CgroupUsage(path: ["a", "a/b", "c", "", "x/y"].randomElement(using: &rng)!, weight: Bool.random(using: &rng) ? Int(rng.next() % 20_000) : nil,
                            cpus: ["1", "", "0-1023", "garbage", "5-2"].randomElement(using: &rng)!, usageMicros: pick(&rng),
                            phases: (0..<Int(rng.next() % 3)).map { _ in pick(&rng) })
            }
            let r = ScenarioReport(phases: (0..<Int(rng.next() % 3)).map { PhaseSpan(name: "p\($0)", startMillis: 0, endMillis: 1) },
                                   workers: workers, cgroups: cgroups)
            let kind = kinds[i % kinds.count]
            let limit: Double? = Bool.random(using: &rng) ? [0, 1, 1e300, -1].randomElement(using: &rng)! : nil
            let result = ScenarioChecks.evaluate(ScenarioCheck(kind, cgroup: Bool.random(using: &rng) ? "a" : nil, limit: limit), report: r, scenario: s)
            #expect(result.measured.isFinite && result.limit.isFinite, "iteration \(i): \(result)")
            _ = r.phaseSummaries; _ = r.groupSummaries; _ = CgroupShares.shares(r.cgroups)
        }
    }
}
