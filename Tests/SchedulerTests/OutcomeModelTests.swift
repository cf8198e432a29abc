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
}
