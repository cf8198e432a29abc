import Foundation
import Testing
@testable import KtstrProtocol

@Suite struct AgentMessageTests {
    @Test func parsesTheProtocolExamples() throws {
        let hello = AgentMessage.parse(#"@ktstr {"type":"hello","release":"7.3.4","cpus":2,"kallsyms":{"scx_root":"ffffffff83a1b2c0","bad":"xyz"}}"#)
        #expect(hello == .hello(release: "7.3.4", cpus: 2, kallsyms: ["scx_root": 0xffff_ffff_83a1_b2c0]))
        let exit = AgentMessage.parse(#"@ktstr {"type":"sched_exit","kind":"error_bpf","kindValue":1025,"code":0,"reason":"scx_bpf_error","message":"boom","source":"loader"}"#)
        #expect(exit == .schedulerExit(SchedulerExit(kind: .errorBPF, kindValue: 1025, code: 0, reason: "scx_bpf_error", message: "boom"), source: "loader"))
        let w = AgentMessage.parse(#"@ktstr {"type":"workers","workers":[{"index":0,"pid":60,"cpuNanos":1,"waitNanos":2,"runs":3,"iterations":4,"lastCPU":1},{"index":1,"pid":61,"cpuNanos":-5,"waitNanos":2,"runs":3,"iterations":4,"lastCPU":null}]}"#)
        #expect(w == .workers([WorkerStats(index: 0, pid: 60, cpuNanos: 1, waitNanos: 2, runs: 3, iterations: 4, lastCPU: 1),
                               WorkerStats(index: 1, pid: 61, cpuNanos: 0, waitNanos: 2, runs: 3, iterations: 4, lastCPU: nil)]))
        #expect(AgentMessage.parse(#"@ktstr {"type":"done"}"#) == .done)
        #expect(AgentMessage.parse(#"@ktstr {"type":"newer_thing"}"#) == .unknown(type: "newer_thing"))
        // Console noise before the prefix (a kernel message interleaved) is tolerated.
        #expect(AgentMessage.parse(#"[  1.0] x @ktstr {"type":"done"}"#) == .done)
    }

    @Test func garbageIsIgnored() {
        #expect(AgentMessage.parse("hello world") == nil)
        #expect(AgentMessage.parse("@ktstr {not json") == nil)
        #expect(AgentMessage.parse(#"@ktstr {"no":"type"}"#) == nil)
        #expect(AgentMessage.parse(#"@ktstr ["array"]"#) == nil)
        #expect(AgentMessage.parse(Substring("@ktstr " + String(repeating: "x", count: AgentMessage.maxLineBytes))) == nil)
    }

    @Test func planEncodesTheContractShape() throws {
        let plan = RunPlan(scheduler: nil, workload: .init(kind: "spinners", count: 4), durationMillis: 3000,
                           kallsyms: ["scx_root"], attachTimeoutMillis: 5000)
        let obj = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(plan)) as? [String: Any])
        #expect(obj["scheduler"] is NSNull)
        #expect((obj["workload"] as? [String: Any])?["kind"] as? String == "spinners")
        #expect(obj["durationMillis"] as? Int == 3000)
        #expect(obj["deadlineMillis"] == nil)
    }
}
