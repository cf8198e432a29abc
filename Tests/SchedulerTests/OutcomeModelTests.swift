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
}
