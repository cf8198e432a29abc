import Foundation
import KtstrTesting

// The kernel's own tools/sched_ext schedulers, built with ktstr's recipe
// (`Provisioning.buildKernelScheduler`, cached by source fingerprint) and run in the VM.

private let toolsSchedExtMissing: String? = {
    if !FileManager.default.fileExists(atPath: Provisioning.kernelSchedExtDirectory + "/scx_central.bpf.c") {
        return "no kernel tools/sched_ext sources in the cache — run `swift run ktstr setup`"
    }
    if (try? Provisioning.scheduler("simple")) == nil { return "libbpf/bpftool not built — run `swift run ktstr setup`" }
    if ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":")
        .contains(where: { FileManager.default.isExecutableFile(atPath: "\($0)/clang") }) != true {
        return "no clang on PATH (builds the BPF side)"
    }
    return nil
}()

@Suite(.ktstr(cpus: 2, memoryMiB: 512))
struct KernelSchedExtSchedulers {
    /// scx_central reads `CONFIG_PREEMPT_RCU` (a `__kconfig` extern from scx/common.bpf.h):
    /// libbpf opens /boot/config-$(uname -r) to resolve it and refuses to load the scheduler
    /// without it ("failed to open system Kconfig"). With the config in the initramfs it
    /// attaches, and ends only because the agent unloaded it.
    @Test(.enabled(if: toolsSchedExtMissing == nil, Comment(rawValue: toolsSchedExtMissing ?? "")))
    func scxCentralLoadsWithKconfigExterns() async throws {
        let binary = try Provisioning.buildKernelScheduler("scx_central", log: .silent)
        let outcome = try await Ktstr.run(scheduler: .binary(path: binary, args: []), workload: .spinners(2),
                                          duration: .seconds(2))
        let log = outcome.schedulerLog ?? ""
        let exit = try #require(outcome.schedulerExit,
                                "scx_central reported no exit; problems: \(outcome.problems); scheduler log: \(log)")
        #expect(exit.kind.name.hasPrefix("unreg") && !exit.isError,
                "exit \(exit.kind) \(exit.reason) \(exit.message); scheduler log: \(log)")
        outcome.expectSchedulerExit(.unreg)
        #expect(!log.contains("failed to open system Kconfig"), "\(log)")
        #expect(outcome.workers.count == 2)
        outcome.expectAllWorkersRan()
    }
}
