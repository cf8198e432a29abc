import KtstrTesting

// The agent's side of scenarios, end to end: nested cgroups with cpu.max and cpusets, and
// every phase op (start, nice, move, affinity, policy, stop, weight) visibly taking effect in
// the per-phase metrics. Under EEVDF (no sched_ext scheduler), on 2 CPUs.
@Suite(.ktstr(cpus: 2, memoryMiB: 512))
struct ScenarioAgent {
    static let ops = Scenario(
        name: "ops",
        cgroups: [
            ScenarioCgroup(path: "p", weight: 100),
            ScenarioCgroup(path: "p/x", weight: 100, cpus: "1", workers: [ScenarioWorkers(name: "x-spin", work: .spin, count: 1)]),
            ScenarioCgroup(path: "p/y", weight: 100, cpuMax: "20000 100000", workers: [ScenarioWorkers(name: "y-spin", work: .spin, count: 1)]),
            ScenarioCgroup(path: "q"),
        ],
        workers: [ScenarioWorkers(name: "r-spin", work: .spin, count: 1),
                  ScenarioWorkers(name: "r-timer", work: .timerSleep, count: 1, periodMicros: 2000)],
        phases: [
            ScenarioPhase(name: "start-r", atMillis: 1000, actions: [.start("r-spin"), .nice("r-timer", 5)]),
            ScenarioPhase(name: "move", atMillis: 2000, actions: [.move("x-spin", to: "q"), .affinity("y-spin", cpus: "0"),
                                                                 .policy("r-spin", .batch)]),
            ScenarioPhase(name: "stop", atMillis: 3000, actions: [.stop("r-spin"), .weight("p/x", 500)]),
        ],
        durationMillis: 4000)

    @Test func everyPhaseOpTakesEffect() async throws {
        let outcome = try await Ktstr.run(scheduler: .none, scenario: Self.ops)
        let r = try #require(outcome.scenario, "no scenario report; problems: \(outcome.problems)")
        #expect(r.problems.isEmpty, "\(r.problems)")
        #expect(r.phases.map(\.name) == ["start", "start-r", "move", "stop"])
        #expect(r.workers.allSatisfy { $0.phases.count == 4 })
        func worker(_ group: String) throws -> WorkerMetrics { try #require(r.workers.first { $0.group == group }, "no \(group)") }
        func cgroup(_ path: String) throws -> CgroupUsage { try #require(r.cgroups.first { $0.path == path }, "no \(path)") }

        // start and stop: r-spin runs in the two middle phases only (a little of "stop" passes
        // before its last sample).
        let rs = try worker("r-spin").phases.map(\.iterations)
        #expect(rs[0] == 0 && rs[1] > 0 && rs[2] > 0 && rs[3] < rs[2] / 2, "\(rs)")
        // move: x-spin ends in q, which had no usage before the move and has after.
        #expect(try worker("x-spin").cgroup == "q")
        let q = try cgroup("q").phases
        #expect(q[0] == 0 && q[1] == 0 && q[2] > 0 && q[3] > 0, "\(q)")
        // cpuset: p/x is CPU 1 only; cpu.max: p/y gets about 20% of one CPU.
        #expect(try cgroup("p/x").cpus == "1")
        let runMicros = Double(r.phases.last!.endMillis) * 1000
        let yShare = Double(try cgroup("p/y").usageMicros) / runMicros
        #expect(yShare > 0.1 && yShare < 0.3, "p/y used \(yShare * 100)% of a CPU under cpu.max 20000/100000")
        // weight: as configured at the end.
        #expect(try cgroup("p/x").weight == 500 && cgroup("p").weight == 100)
        // Every worker progressed; the timer measured its wake lateness.
        #expect(r.workers.allSatisfy { $0.iterations > 0 && !$0.cpusUsed.isEmpty }, "\(r.workers.map { ($0.group, $0.iterations) })")
        let timer = try worker("r-timer")
        let p50 = try #require(timer.wakeP50Nanos), p99 = try #require(timer.wakeP99Nanos), max = try #require(timer.wakeMaxNanos)
        #expect((timer.wakeSamples ?? 0) > 100 && p50 <= p99 && p99 <= max)
        #expect(try worker("r-spin").wakeSamples == nil, "spin measures no wake latency")
        // Phase slices add up to the totals.
        for w in r.workers {
            #expect(w.phases.reduce(0) { $0 + $1.iterations } == w.iterations, "\(w.group)")
        }
    }
}
