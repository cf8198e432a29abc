import Foundation
import KtstrTesting

/// Builds Schedulers/scx_depth (BPF + loader) once, against the guest kernel's BTF.
/// The build is cached under ~/.cache/ktstr, keyed by the sources' contents.
func scxDepth(_ args: String...) throws -> SchedulerSpec {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let binary = try Provisioning.buildScheduler(sourceDirectory: repo.appendingPathComponent("Schedulers/scx_depth").path)
    return .binary(path: binary, args: args)
}

@Suite(.ktstr(cpus: 2, memoryMiB: 512))
struct DepthSchedulerTests {
    /// With no limit the scheduler runs every worker and is unloaded cleanly at the end.
    @Test func schedulesEveryWorker() async throws {
        let outcome = try await Ktstr.run(scheduler: try scxDepth(), workload: .spinners(4), duration: .seconds(3))
        outcome.expectNoSchedulerError()
        outcome.expectAllWorkersRan()
    }

    /// The queue-depth rule fires under a burst of runnable tasks: the kernel disables the
    /// scheduler with error_bpf and our message, and ktstr captures a failure dump.
    @Test func depthLimitTripsUnderLoad() async throws {
        let outcome = try await Ktstr.run(scheduler: try scxDepth("-d", "1"), workload: .spinners(8), duration: .seconds(3))
        outcome.expectSchedulerExit(.errorBPF, messageContains: "limit is 1")
        #expect(outcome.failureDump != nil)
    }

    /// A deliberately failing test, to see what a failure looks like: the message names the
    /// exit kind and reason, and the console and failure dump are attached
    /// (`swift test --attachments-path DIR`). Opt in with KTSTR_SHOW_FAILURE=1.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["KTSTR_SHOW_FAILURE"] == "1",
                   "deliberately failing demo; run with KTSTR_SHOW_FAILURE=1 to see it fail"))
    func deliberatelyFailingDemo() async throws {
        let outcome = try await Ktstr.run(scheduler: try scxDepth("-d", "1"), workload: .spinners(8), duration: .seconds(3))
        outcome.expectNoSchedulerError()
    }
}
