import Testing
@testable import KtstrProtocol

/// Scenario files and plan.json come from users and the host, the `scenario` message from a
/// hostile guest: their decoders must return a value or an error for anything, within bounds,
/// and what they return must survive its own encoding.
@Suite struct ScenarioFuzzTests {
    /// What every decoded scenario must respect.
    static func boundsProblem(_ s: Scenario) -> String? {
        let processes = s.groups.reduce(0) { $0 + $1.workers.count * $1.workers.processesPerUnit }
        if s.cgroups.count > Scenario.maxCgroups { return "\(s.cgroups.count) cgroups" }
        if processes > Scenario.maxProcesses { return "\(processes) processes" }
        if s.phases.count > Scenario.maxPhases || s.phases.contains(where: { $0.actions.count > Scenario.maxActions }) { return "too many phases/actions" }
        if s.phases != s.phases.sorted(by: { $0.atMillis < $1.atMillis }) { return "phases not sorted" }
        if s.cgroups.contains(where: { $0.path.contains("..") || $0.path.hasPrefix("/") || $0.path.isEmpty }) { return "unsafe cgroup path" }
        if s.groups.contains(where: { $0.workers.workType == nil || $0.workers.count < 0 }) { return "unknown work type or negative count" }
        if s.phases.flatMap(\.actions).contains(where: { $0.kind == nil }) { return "unknown op" }
        return nil
    }

    @Test func scenarioMutants() {
        let seeds = [ScenarioTests.full.encoded(), ScenarioTests.plan(ScenarioTests.full).encodedText]
        // The mutants start from valid inputs (else every one would be rejected and test nothing).
        #expect((try? Scenario.decode(Array(seeds[0].utf8)).get()) != nil)
        #expect((try? RunPlan.decode(Array(seeds[1].utf8)).get())?.scenario != nil)
        ProtocolFuzzTests.timed("scenario", inputs: seeds.count * Fuzz.iterations) {
            var problems: [String] = []
            for (k, seed) in seeds.enumerated() {
                problems += Fuzz.run("scenario seed \(k)", seed: Array(seed.utf8), baseSeed: 0x5CE7_0000 + UInt64(k)) { b in
                    let decoded: Scenario?
                    if k == 0 { decoded = try? Scenario.decode(b).get() } else { decoded = (try? RunPlan.decode(b).get())?.scenario }
                    guard let s = decoded else { return nil }
                    if let p = Self.boundsProblem(s) { return p }
                    // Decoding is idempotent: the value re-encodes to text that decodes to it.
                    guard let again = try? Scenario.decode(Array(s.encoded().utf8)).get(), again == s else {
                        return "\(s.encoded()) does not round-trip"
                    }
                    return nil
                }
            }
            return problems
        }
    }

    @Test func reportMutants() throws {
        let seed = Array(AgentMessage.scenario(ScenarioTests.report).line().utf8)
        let parsed = try #require(AgentMessage.parse(Substring(String(decoding: seed, as: UTF8.self))))
        var isReport = false
        if case .scenario = parsed { isReport = true }
        #expect(isReport, "the seed parses as \(parsed), not a scenario report")
        ProtocolFuzzTests.timed("scenario report") {
            Fuzz.run("report", seed: seed, baseSeed: 0x5E9_0000) { b in
                guard let m = AgentMessage.parse(Substring(String(decoding: b, as: UTF8.self))) else { return nil }
                if case let .scenario(r) = m {
                    if r.workers.count > ScenarioReport.maxWorkers || r.cgroups.count > ScenarioReport.maxCgroups
                        || r.phases.count > ScenarioReport.maxPhases || r.workers.contains(where: { $0.cpusUsed.count > ScenarioReport.maxCPUs }) {
                        return "bounds exceeded"
                    }
                }
                guard AgentMessage.parse(Substring(m.line())) == m else { return "\(m) does not round-trip" }
                return nil
            }
        }
    }
}
