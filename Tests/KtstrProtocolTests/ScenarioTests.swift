import Foundation
import Testing
@testable import KtstrProtocol

@Suite struct ScenarioTests {
    /// Every field of every scenario type set (and phases already sorted, as `decode` leaves them).
    static let full = Scenario(
        name: "everything",
        cgroups: [
            ScenarioCgroup(path: "a", weight: 100, cpus: "0-1", cpuMax: "50000 100000"),
            ScenarioCgroup(path: "a/b", weight: 300, cpus: "1", cpuMax: "max",
                           workers: [ScenarioWorkers(name: "pp", work: .futexPingPong, count: 2, nice: -5, policy: .batch,
                                                     periodMicros: 500, burstMicros: 20, workingSetKiB: 64, fanOut: 3)]),
            ScenarioCgroup(path: "c", workers: [ScenarioWorkers(work: .fanOut, count: 1, fanOut: 2),
                                                ScenarioWorkers(work: .timerSleep, count: 1, periodMicros: 1000)]),
        ],
        workers: [ScenarioWorkers(name: "late", work: .spin, count: 1, policy: .idle)],
        phases: [
            ScenarioPhase(name: "go", atMillis: 1000, actions: [.start("late"), .nice("pp", 3), .weight("a/b", 50)]),
            ScenarioPhase(name: "shuffle", atMillis: 2000, actions: [.move("late", to: "c"), .affinity("pp", cpus: "0"),
                                                                    .policy("late", .other), .stop("c-fan_out-0")]),
        ],
        checks: [.noStarvation(cgroup: "a/b", maxGapMillis: 500), .fairnessSpread(max: 1.5), .maxGap(millis: 250.5),
                 .wakeLatencyP99(millis: 20), .weightShares(), .cpusetRespected, .maxMigrations(100)],
        durationMillis: 4000)

    static let minimal = Scenario(name: "m")

    static let report = ScenarioReport(
        phases: [PhaseSpan(name: "start", startMillis: 0, endMillis: 1000), PhaseSpan(name: "go", startMillis: 1000, endMillis: 4000)],
        workers: [
            WorkerMetrics(index: 0, group: "pp", cgroup: "a/b", work: "futex_ping_pong", pid: 71, iterations: 123_456, cpuNanos: 1 << 40,
                          runDelayNanos: 5_000_000, maxGapNanos: 12_345_678, wakeP50Nanos: 40_000, wakeP99Nanos: 900_000,
                          wakeMaxNanos: 3_000_000, wakeSamples: 123_456, migrations: 17, cpusUsed: [1], voluntarySwitches: 100_000,
                          involuntarySwitches: 12, phases: [PhaseSlice(iterations: 1, cpuNanos: 2), PhaseSlice(iterations: 3, cpuNanos: 4)]),
            WorkerMetrics(index: 1, group: "late", cgroup: "", work: "spin", pid: 72, iterations: 0, cpuNanos: 0, runDelayNanos: 0,
                          maxGapNanos: 0, migrations: 0, cpusUsed: [], voluntarySwitches: 0, involuntarySwitches: 0, phases: []),
        ],
        cgroups: [CgroupUsage(path: "a", weight: 100, cpus: "0-1", usageMicros: 4_000_000, phases: [1_000_000, 3_000_000]),
                  CgroupUsage(path: "c", weight: nil, cpus: nil, usageMicros: 0, phases: [0, 0])],
        problems: ["cpuset.cpus of a/b: Invalid argument"])

    static func plan(_ s: Scenario?) -> RunPlan {
        RunPlan(scheduler: nil, workload: .init(kind: .idle, count: 0), durationMillis: 3000, kallsyms: [],
                attachTimeoutMillis: 5000, scenario: s)
    }

    @Test(arguments: [full, minimal]) func handJSONRoundTrips(_ s: Scenario) throws {
        #expect(try Scenario.decode(Array(s.encoded().utf8)).get() == s)
        #expect(try RunPlan.decode(Self.plan(s).encoded()).get() == Self.plan(s))
    }

    /// A file JSONEncoder writes is read by the hand decoder, and JSONDecoder reads the hand JSON.
    @Test(arguments: [full, minimal]) func foundationAndHandJSONAgree(_ s: Scenario) throws {
        #expect(try Scenario.decode([UInt8](JSONEncoder().encode(s))).get() == s)
        #expect(try JSONDecoder().decode(Scenario.self, from: Data(s.encoded().utf8)) == s)
        #expect(try RunPlan.decode([UInt8](JSONEncoder().encode(Self.plan(s)))).get() == Self.plan(s))
        #expect(try JSONDecoder().decode(RunPlan.self, from: Data(Self.plan(s).encoded())) == Self.plan(s))
    }

    @Test func reportRoundTripsBothWays() throws {
        let m = AgentMessage.scenario(Self.report)
        #expect(AgentMessage.parse(Substring(m.line())) == m)
        // The message's fields are the Codable keys: JSONDecoder reads them, and JSONEncoder's
        // output (nil fields left out) reads back the same through the hand parser.
        let fields = JSON.object(Self.report.fields).encoded()
        #expect(try JSONDecoder().decode(ScenarioReport.self, from: Data(fields.utf8)) == Self.report)
        let foundation = try #require(JSON.parse([UInt8](JSONEncoder().encode(Self.report))))
        #expect(ScenarioReport.from(foundation) == Self.report)
    }

    /// The synthesized keys are the hand JSON's keys, for every type (fully populated values).
    @Test func synthesizedKeysAreTheHandKeys() throws {
        func keys(_ j: JSON, _ at: String = "") -> Set<String> {
            switch j {
            case let .object(o): Set(o.flatMap { k, v in [at + "." + k] + keys(v, at + "." + k) })
            case let .array(a): a.reduce(into: Set<String>()) { $0.formUnion(keys($1, at + "[]")) }
            default: []
            }
        }
        let sFoundation = try #require(JSON.parse([UInt8](JSONEncoder().encode(Self.full))))
        #expect(keys(sFoundation) == keys(Self.full.json))
        let rFoundation = try #require(JSON.parse([UInt8](JSONEncoder().encode(Self.report))))
        #expect(keys(rFoundation) == keys(.object(Self.report.fields)))
        var plan = Self.plan(Self.full)
        plan.workload = .init(kind: .spinners, count: 1, periodMicros: 5, cgroup: "w")
        plan.deadlineMillis = 9000
        let pFoundation = try #require(JSON.parse([UInt8](JSONEncoder().encode(plan))))
        #expect(keys(pFoundation) == keys(plan.json))
    }

    @Test func groupsResolveNamesAndStartsLater() {
        #expect(Self.full.groups.map(\.name) == ["late", "pp", "c-fan_out-0", "c-timer_sleep-1"])
        #expect(Self.full.groups.map(\.cgroup) == ["", "a/b", "c", "c"])
        #expect(Self.full.startedLater == ["late"])
        #expect(Scenario(name: "x", workers: [ScenarioWorkers(work: .spin, count: 2)]).groups.map(\.name) == ["root-spin-0"])
        #expect(ScenarioWorkers(work: .pipePingPong, count: 1).processesPerUnit == 2)
        #expect(ScenarioWorkers(work: .fanOut, count: 1).processesPerUnit == 1 + ScenarioWorkers.defaultFanOut)
        #expect(WorkType.allCases.count == 13)
        #expect(WorkType.allCases.filter(\.measuresWakeLatency) == [.futexPingPong, .pipePingPong, .timerSleep, .ioWait, .fanOut])
    }

    @Test func phasesAreSortedAndDefaultsFilled() throws {
        let text = #"{"workers":[{"work":"spin"}],"phases":[{"name":"late","atMillis":2000},{"atMillis":-5},{"name":"mid","atMillis":2000}]}"#
        let s = try Scenario.decode(Array(text.utf8)).get()
        #expect(s.name == "scenario" && s.workers.first?.count == 1)
        #expect(s.phases.map(\.name) == ["phase2", "late", "mid"])
        #expect(s.phases.map(\.atMillis) == [0, 2000, 2000])
    }

    @Test func decodeClamps() throws {
        let cgroups = (0..<100).map { #"{"path":"g\#($0)","weight":\#($0 == 0 ? 0 : 99999)}"# }.joined(separator: ",")
        let actions = (0..<40).map { _ in #"{"op":"nice","workers":"s","value":-99}"# }.joined(separator: ",")
        let phases = (0..<40).map { #"{"name":"p\#($0)","atMillis":\#($0 == 0 ? 99_999_999 : $0),"actions":[\#(actions)]}"# }.joined(separator: ",")
        let text = #"{"name":"big","durationMillis":-1,"workers":[{"name":"s","work":"spin","count":200,"nice":50,"periodMicros":0,"burstMicros":-1,"workingSetKiB":1e12,"fanOut":0},"#
            + #"{"work":"futex_ping_pong","count":100},{"work":"fan_out","count":5,"fanOut":1000}],"cgroups":[\#(cgroups)],"phases":[\#(phases)]}"#
        let s = try Scenario.decode(Array(text.utf8)).get()
        #expect(s.cgroups.count == Scenario.maxCgroups)
        #expect(s.cgroups.first?.weight == 1 && s.cgroups.last?.weight == 10_000)
        #expect(s.phases.count == Scenario.maxPhases && s.phases.allSatisfy { $0.actions.count == Scenario.maxActions })
        #expect(s.phases.last?.atMillis == Scenario.maxMillis && s.durationMillis == 0)
        #expect(s.phases.first?.actions.first?.value == -20)
        let w = s.workers
        #expect(w[0].count == 200 && w[0].nice == 19 && w[0].periodMicros == 1 && w[0].burstMicros == 0)
        #expect(w[0].workingSetKiB == Scenario.maxWorkingSetKiB)
        #expect(w[0].fanOut == 1)
        // 256 processes in all: 200 spinners, then 28 pairs, then no fan_out parent of 65.
        #expect(w[1].count == 28 && w[2].count == 0 && w[2].fanOut == Scenario.maxFanOut)
        #expect(s.groups.reduce(0) { $0 + $1.workers.count * $1.workers.processesPerUnit } == Scenario.maxProcesses)
        let ws = try Scenario.decode(Array(#"{"workers":[{"work":"cache_pressure","workingSetKiB":99999999}]}"#.utf8)).get()
        #expect(ws.workers.first?.workingSetKiB == Scenario.maxWorkingSetKiB)
        // A plan's scenario is clamped the same way.
        let plan = try RunPlan.decode(Array(#"{"scenario":\#(text)}"#.utf8)).get()
        #expect(plan.scenario == s && plan.runMillis == 0)
    }

    @Test func decodeRejectsWhatTheAgentCannotRun() throws {
        let spin = #"{"name":"s","work":"spin"}"#
        let cases: [(String, String)] = [
            (#"{"cgroups":[{"path":"../x"}]}"#, "relative cgroup path"),
            (#"{"cgroups":[{"path":"/abs"}]}"#, "relative cgroup path"),
            (#"{"cgroups":[{"path":"a//b"}]}"#, "relative cgroup path"),
            (#"{"cgroups":[{"path":"a"},{"path":"a/.."}]}"#, "relative cgroup path"),
            (#"{"cgroups":[{"path":".hidden"}]}"#, "relative cgroup path"),
            (#"{"cgroups":[{"path":"a b"}]}"#, "relative cgroup path"),
            (#"{"cgroups":[{"path":"a\nb"}]}"#, "relative cgroup path"),
            (#"{"cgroups":[{"path":""}]}"#, "relative cgroup path"),
            (#"{"cgroups":[{"path":"1/2/3/4/5/6/7/8/9"}]}"#, "at most 8 deep"),
            (#"{"cgroups":[{"path":"a/b"}]}"#, "list its parent 'a' before it"),
            (#"{"cgroups":[{"path":"a"},{"path":"a"}]}"#, "listed twice"),
            (#"{"cgroups":[{"weight":5}]}"#, "path missing"),
            (#"{"cgroups":[{"path":"a","workers":[\#(spin)]},{"path":"a/b"}]}"#, "only in leaves"),
            (#"{"cgroups":[{"path":"a","cpus":"x"}]}"#, "not a CPU list"),
            (#"{"cgroups":[{"path":"a","cpus":"0-5000"}]}"#, "not a CPU list"),
            (#"{"cgroups":[{"path":"a","cpuMax":"50000 100000\nx"}]}"#, "cpu.max"),
            (#"{"workers":[{"work":"dance"}]}"#, "'dance' is not a work type"),
            (#"{"workers":[{"count":3}]}"#, "work missing"),
            (#"{"workers":[{"work":"spin","policy":"fifo"}]}"#, "'fifo' is not a policy"),
            (#"{"workers":[\#(spin),\#(spin)]}"#, "two groups of workers are named 's'"),
            (#"{"workers":[{"work":"spin","name":"\#(String(repeating: "n", count: 65))"}]}"#, "1...64 bytes"),
            (#"{"workers":[\#(spin)],"phases":[{"name":"p","actions":[{"op":"explode","workers":"s"}]}]}"#, "'explode' is not an op"),
            (#"{"workers":[\#(spin)],"phases":[{"name":"p","actions":[{"op":"start","workers":"t"}]}]}"#, "names no group"),
            (#"{"workers":[\#(spin)],"phases":[{"name":"p","actions":[{"op":"move","workers":"s","cgroup":"z"}]}]}"#, "not a cgroup"),
            (#"{"cgroups":[{"path":"a"},{"path":"a/b"}],"workers":[\#(spin)],"phases":[{"actions":[{"op":"move","workers":"s","cgroup":"a"}]}]}"#, "only in leaves"),
            (#"{"workers":[\#(spin)],"phases":[{"name":"p","actions":[{"op":"nice","workers":"s"}]}]}"#, "value missing"),
            (#"{"workers":[\#(spin)],"phases":[{"name":"p","actions":[{"op":"weight","cgroup":"s","value":5}]}]}"#, "not a cgroup"),
            (#"{"workers":[\#(spin)],"phases":[{"name":"p","actions":[{"op":"affinity","workers":"s","cpus":"a-b"}]}]}"#, "not a CPU list"),
            (#"{"workers":[\#(spin)],"phases":[{"name":"p","actions":[{"op":"policy","workers":"s","policy":"rr"}]}]}"#, "not one of other"),
            (#"{"checks":[{"check":"vibes"}]}"#, "'vibes' is not a check"),
            (#"{"cgroups":[{"path":"a"}],"checks":[{"check":"max_gap","cgroup":"b"}]}"#, "not a cgroup of the scenario"),
            (#"{"name":7}"#, "name must be a string"),
            ("[1]", "not a JSON object"),
        ]
        for (text, why) in cases {
            let e = try #require(throws: RunPlan.DecodeError.self, "accepted \(text)") { try Scenario.decode(Array(text.utf8)).get() }
            #expect(e.text.hasPrefix("scenario: ") && e.text.contains(why), "\(text): \(e.text)")
        }
        // Through the plan, the same errors, with the plan's prefix.
        let e = try #require(throws: RunPlan.DecodeError.self) { try RunPlan.decode(Array(#"{"scenario":{"workers":[{"work":"dance"}]}}"#.utf8)).get() }
        #expect(e.text.hasPrefix("plan.json: scenario: ") && e.text.contains("dance"))
        // A null scenario is none.
        #expect(try RunPlan.decode(Array(#"{"scenario":null}"#.utf8)).get().scenario == nil)
    }
}
