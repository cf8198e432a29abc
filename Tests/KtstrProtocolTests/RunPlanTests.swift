import Foundation
import Testing
import KtstrProtocol

@Suite struct RunPlanTests {
    static let full = RunPlan(
        scheduler: .init(path: "/ktstr/bin/scheduler", args: ["--error-after", "100"], name: "fault"),
        workload: .init(kind: .sleepers, count: 4, periodMicros: 500, cgroup: "ktstr/a"),
        durationMillis: 3000, kallsyms: ["scx_root", "jiffies"], attachTimeoutMillis: 5000, deadlineMillis: 55_000)
    static let bare = RunPlan(scheduler: nil, workload: .init(kind: .idle, count: 0), durationMillis: 10,
                              kallsyms: [], attachTimeoutMillis: 100)

    @Test(arguments: [full, bare]) func encodeThenDecodeRoundTrips(_ plan: RunPlan) throws {
        #expect(try RunPlan.decode(plan.encoded()).get() == plan)
    }

    /// Codable callers (RunOutcome-style embedding) write bytes the agent reads the same.
    @Test(arguments: [full, bare]) func codableEncodingDecodesTheSame(_ plan: RunPlan) throws {
        #expect(try RunPlan.decode([UInt8](JSONEncoder().encode(plan))).get() == plan)
    }

    @Test func everyWorkloadKindRoundTrips() throws {
        for kind in WorkloadKind.allCases {
            var plan = Self.bare
            plan.workload = .init(kind: kind, count: 2)
            #expect(try RunPlan.decode(plan.encoded()).get().workload.workloadKind == kind)
        }
        #expect(WorkloadKind.allCases.map(\.rawValue) == ["spinners", "sleepers", "ping_pong", "fork_storm", "idle"])
    }

    @Test func decodeClampsEverything() throws {
        let ok = #"{"scheduler":{"path":"/ktstr/bin/scheduler","args":["--error-after","100",7],"name":"fault"},"workload":{"kind":"spinners","count":4000,"periodMicros":0,"cgroup":null},"durationMillis":-5,"kallsyms":["scx_root"],"attachTimeoutMillis":5000}"#
        let p = try RunPlan.decode(Array(ok.utf8)).get()
        #expect(p.scheduler?.args == ["--error-after", "100"])
        #expect(p.workload.count == RunPlan.maxWorkers)
        #expect(p.workload.periodMicros == 1)
        #expect(p.durationMillis == 0)
        #expect(p.deadlineMillis == nil && p.agentDeadlineMillis == 0 + 5000 + 60_000)

        let noSched = #"{"scheduler":null,"workload":{"kind":"idle","count":0},"durationMillis":99999999,"kallsyms":[],"attachTimeoutMillis":1,"deadlineMillis":1}"#
        let q = try RunPlan.decode(Array(noSched.utf8)).get()
        #expect(q.scheduler == nil && q.attachTimeoutMillis == 100 && q.durationMillis == 3_600_000 && q.deadlineMillis == 1000)

        let defaults = try RunPlan.decode(Array("{}".utf8)).get()
        #expect(defaults.workload.workloadKind == .idle && defaults.durationMillis == 3000 && defaults.attachTimeoutMillis == 10_000)
        let many = "{\"kallsyms\":[" + (0..<300).map { "\"s\($0)\"" }.joined(separator: ",") + "]}"
        #expect(try RunPlan.decode(Array(many.utf8)).get().kallsyms.count == RunPlan.maxKallsyms)
    }

    @Test func decodeRejectsWhatTheAgentCannotRun() throws {
        let cases: [(String, String)] = [
            (#"{"workload":{"kind":"dance"}}"#, "unknown workload kind 'dance'"),
            (#"{"workload":{"kind":"spinners","cgroup":"../../x"}}"#, "cgroup"),
            (#"{"workload":{"kind":"spinners","cgroup":"/abs"}}"#, "cgroup"),
            (#"{"workload":{"kind":"spinners","cgroup":""}}"#, "cgroup"),
            (#"{"scheduler":{"args":[]}}"#, "scheduler.path missing"),
            ("nope", "not a JSON object"),
            ("[]", "not a JSON object"),
        ]
        for (text, why) in cases {
            let e = try #require(throws: RunPlan.DecodeError.self, "accepted \(text)") { try RunPlan.decode(Array(text.utf8)).get() }
            #expect(e.text.contains(why), "\(text): \(e.text)")
        }
    }
}
