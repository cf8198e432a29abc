import Testing
@testable import KtstrProtocol

@Suite struct AgentMessageTests {
    @Test func parsesTheProtocolExamples() throws {
        let hello = AgentMessage.parse(#"@ktstr {"type":"hello","release":"7.3.4","cpus":2,"kallsyms":{"scx_root":"ffffffff83a1b2c0","bad":"xyz"}}"#)
        #expect(hello == .hello(release: "7.3.4", cpus: 2, kallsyms: ["scx_root": 0xffff_ffff_83a1_b2c0]))
        let exit = AgentMessage.parse(#"@ktstr {"type":"sched_exit","kind":"error_bpf","kindValue":1025,"code":0,"reason":"scx_bpf_error","message":"boom","source":"loader"}"#)
        #expect(exit == .schedulerExit(SchedulerExit(kind: .errorBPF, kindValue: 1025, code: 0, reason: "scx_bpf_error", message: "boom", source: .loader)))
        // A code the sender did not have is null (unknown), not 0.
        let uei = AgentMessage.parse(#"@ktstr {"type":"sched_exit","kind":"unreg_bpf","kindValue":65,"code":null,"reason":"unregistered from BPF","message":"bye","source":"kmsg"}"#)
        #expect(uei == .schedulerExit(SchedulerExit(kind: .unregBPF, kindValue: 65, code: nil, reason: "unregistered from BPF", message: "bye", source: .kernelLog)))
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
        let plan = RunPlan(scheduler: nil, workload: .init(kind: .spinners, count: 4), durationMillis: 3000,
                           kallsyms: ["scx_root"], attachTimeoutMillis: 5000)
        let obj = try #require(JSON.parse(plan.encoded()))
        #expect(obj["scheduler"] == .null)
        #expect(obj["workload"]?["kind"]?.string == "spinners")
        #expect(obj["workload"]?["periodMicros"] == .null)
        #expect(obj["durationMillis"]?.int == 3000)
        #expect(obj["deadlineMillis"] == nil)
        #expect(obj.object?.map(\.0) == ["scheduler", "workload", "durationMillis", "kallsyms", "attachTimeoutMillis"])
    }

    /// One of every case, with values that survive the trip (hex addresses, negative codes).
    static let everyCase: [AgentMessage] = [
        .hello(release: "7.3.4+deb13-cloud-amd64", cpus: 4, kallsyms: ["scx_root": 0xffff_ffff_83a1_b2c0, "_text": 0xffff_ffff_8100_0000]),
        .schedulerStarted(pid: 57),
        .schedulerEnabled(millis: 412),
        .schedulerExit(SchedulerExit(kind: .errorStall, kindValue: 1026, code: -3, reason: "runnable task stall",
                                     message: "stalled \"x\"\n\u{1}ü", source: .kernelLog)),
        .schedulerExit(SchedulerExit(kind: "kind_77", kindValue: nil, code: nil, reason: "", message: "", source: .loader)),
        .workers([WorkerStats(index: 0, pid: 60, cpuNanos: 1 << 40, waitNanos: 2, runs: 3, iterations: 4, lastCPU: 1),
                  WorkerStats(index: 1, pid: 61, cpuNanos: 0, waitNanos: 0, runs: 0, iterations: 0, lastCPU: nil)]),
        .workers([]),
        .scenario(ScenarioTests.report),
        .scenario(ScenarioReport(phases: [], workers: [], cgroups: [])),
        .log(stream: "scheduler", text: "line 1\nline 2\t\\"),
        .problem("agent deadline passed"),
        .problem("scheduler died before attaching (exit 1)", kind: .schedulerFailedToLoad),
        .problem("1.20 s of the planned 3.00 s", kind: .workloadCutShort),
        .problem("no exit information from the scheduler", kind: .noExitInformation),
        .done,
        .ready,
        .restored(random: "00ff3b757d874a6cca5e342bb8d3ae44"),
        .unknown(type: "newer_thing"),
    ]

    @Test(arguments: everyCase) func encodeThenParseRoundTrips(_ m: AgentMessage) throws {
        let line = m.line()
        #expect(line.hasPrefix(AgentMessage.prefix) && line.hasSuffix("\n"))
        #expect(line.dropLast().contains("\n") == false, "one message is one line")
        #expect(AgentMessage.parse(Substring(line)) == m)
        // Extra fields (hello's millis) ride along and are ignored by the reader.
        #expect(AgentMessage.parse(Substring(m.line(extra: [("millis", .int(5)), ("briefly", .bool(true))]))) == m)
    }

    @Test func sendersNumbersAreClampedNotTrusted() throws {
        let m = AgentMessage.parse(#"@ktstr {"type":"workers","workers":[{"cpuNanos":1e300,"runs":"7","lastCPU":1e300},3]}"#)
        #expect(m == .workers([WorkerStats(index: 0, pid: 0, cpuNanos: 0, waitNanos: 0, runs: 0, iterations: 0, lastCPU: nil)]))
        let e = AgentMessage.parse(#"@ktstr {"type":"sched_exit","kind":"error_reenq","code":1e300}"#)
        #expect(e == .schedulerExit(SchedulerExit(kind: .errorReenq, kindValue: 1027, code: nil, source: nil)))
        // A problem kind this host does not know is a plain problem.
        #expect(AgentMessage.parse(#"@ktstr {"type":"problem","kind":"newer_kind","message":"m"}"#) == .problem("m"))
    }
}
