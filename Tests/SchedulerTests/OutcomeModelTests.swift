import Foundation
import Testing
import KtstrTesting

@Suite struct OutcomeModelTests {
    @Test func exitKindNamesComeFromKernelEnumerators() {
        #expect(ExitKind.fromEnumerator("SCX_EXIT_ERROR_BPF") == .errorBPF)
        #expect(ExitKind.fromEnumerator("SCX_EXIT_PARENT").name == "parent")
        #expect(ExitKind.kernelReasons["runnable task stall"] == .errorStall)
    }

    @Test func outcomeRoundTripsThroughJSON() throws {
        let o = RunOutcome(backend: .qemuTCG, wallMillis: 12,
                           schedulerExit: SchedulerExit(kind: .errorBPF, kindValue: 1025, reason: "scx_bpf_error", message: "boom"))
        let back = try JSONDecoder().decode(RunOutcome.self, from: JSONEncoder().encode(o))
        #expect(back.schedulerExit == o.schedulerExit)
        #expect(back.schedulerExit?.isError == true)
    }

    @Test(arguments: [MachineExit.shutdown, .fatal("KVM_EXIT_INTERNAL_ERROR"), .timeout, .killed])
    func machineExitIsTypedInJSON(_ exit: MachineExit) throws {
        let o = RunOutcome(backend: .kvm, wallMillis: 1, machineExit: exit)
        let data = try JSONEncoder().encode(o)
        #expect(try JSONDecoder().decode(RunOutcome.self, from: data).machineExit == exit)
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let me = try #require(obj["machineExit"] as? [String: Any])
        #expect(me["kind"] as? String == exit.kind.rawValue)
    }

    @Test func problemsAreTypedAndSayWhatHappened() throws {
        let problems = RunProblem.Kind.allCases.map { RunProblem($0, "detail") }
        let o = RunOutcome(backend: .qemuTCG, wallMillis: 1, problems: problems)
        let data = try JSONEncoder().encode(o)
        let back = try JSONDecoder().decode(RunOutcome.self, from: data)
        #expect(back.problems == problems)
        #expect(back.problems.contains(.guestKernelCrash) && !RunOutcome(backend: .kvm, wallMillis: 1).problems.contains(.timeout))
        // Every kind has its own human text; the JSON carries it as "message".
        #expect(Set(problems.map(\.description)).count == problems.count)
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let first = try #require((obj["problems"] as? [[String: Any]])?.first)
        #expect(first["kind"] as? String == "guest_never_said_hello" && first["message"] as? String == problems[0].description)
    }

    /// The helpers check what they say: fewer workers than asked for fail, and so does a
    /// problem next to a clean exit.
    @Test func expectationHelpersCheckWhatTheySay() {
        let w = WorkerStats(index: 0, pid: 9, cpuNanos: 5, waitNanos: 0, runs: 1, iterations: 3)
        let clean = SchedulerExit(kind: .unreg, kindValue: 64, code: 0, reason: "unregistered from user space", source: .memory)
        let short = RunOutcome(backend: .qemuTCG, wallMillis: 1, schedulerExit: clean, workers: [w], requestedWorkers: 2)
        withKnownIssue { short.expectAllWorkersRan() }
        var full = short
        full.requestedWorkers = 1
        full.expectAllWorkersRan()
        full.expectNoSchedulerError()
        var troubled = full
        troubled.problems = [RunProblem(.workloadCutShort, "1.00 s of the planned 3.00 s")]
        withKnownIssue { troubled.expectNoSchedulerError() }
        // An unknown code never matches an expected one.
        var unknownCode = full
        unknownCode.schedulerExit?.code = nil
        withKnownIssue { unknownCode.expectSchedulerExit(.unreg, code: 0) }
        #expect(unknownCode.exitSummary.contains("code unknown"))
    }

    @Test func unhandledAccessesTravelInTheOutcome() throws {
        var u = UnhandledAccesses()
        u.recordPort(0x510, isWrite: true, count: 3)
        let o = RunOutcome(backend: .kvm, wallMillis: 1)
        var withCounts = o
        withCounts.unhandledAccesses = u
        #expect(try JSONDecoder().decode(RunOutcome.self, from: JSONEncoder().encode(withCounts)).unhandledAccesses == u)
        #expect(try JSONDecoder().decode(RunOutcome.self, from: JSONEncoder().encode(o)).unhandledAccesses == nil)
    }

    /// The outcome's JSON carries the bounded timeline; the artifacts get the full one.
    @Test func fullTimelineGoesToTheArtifactsOnly() throws {
        let samples = (0..<1000).map { TimelineSample(millis: $0 * 100, cpus: [CPUSample(nrRunning: 1, scxNrRunning: 1, localDSQDepth: 0,
                                                                                        currentPID: 1, currentComm: "x", rqClock: UInt64($0))]) }
        let full = Timeline(intervalMillis: 100, samples: samples, samplingMillis: 3)
        var o = RunOutcome(backend: .qemuTCG, wallMillis: 100_000)
        o.fullTimeline = full
        o.timeline = full.bounded(to: RunOutcome.maxOutcomeSamples)
        let data = try JSONEncoder().encode(o)
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(obj["fullTimeline"] == nil && obj["_fullTimeline"] == nil, "\(obj.keys.sorted())")
        let back = try JSONDecoder().decode(RunOutcome.self, from: data)
        #expect(back.timeline?.samples.count == 600 && back.timeline?.droppedSamples == 400 && back.fullTimeline == nil)
        #expect(o.samplerCostFraction == 3.0 / 100_000)
        let file = try #require(RunArtifacts.files(of: o).first { $0.name == "timeline.json" })
        let written = try JSONDecoder().decode(Timeline.self, from: Data(file.contents.utf8))
        #expect(written == full)
        // Decoded (no full one in memory): the bounded one is what there is.
        #expect(RunArtifacts.files(of: back).first { $0.name == "timeline.json" } != nil)
        #expect(RunArtifacts.files(of: RunOutcome(backend: .kvm, wallMillis: 1)).allSatisfy { $0.name != "timeline.json" })
    }
}
