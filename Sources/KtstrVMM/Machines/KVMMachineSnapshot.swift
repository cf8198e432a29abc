import Foundation
import KtstrMachine

/// Snapshot and restore of a Linux guest on our VMM (ARCHITECTURE.md "Snapshot and restore"):
/// the generic parts are `VMSnapshot`'s; this adds the machine's shape (topology, memory,
/// command line, CPUID policy) so that a restore rebuilds the same machine, and its devices
/// (COM1, COM2, i8042). CPUID is not saved: the restore sets the table the boot set, from the
/// same configuration.
extension KVMMachine {
    static let snapshotKind = "kvm-linux"

    /// Writes a snapshot to `directory`, freezing the machine for the duration unless it is
    /// frozen already (or not started).
    public func snapshot(to directory: String, freezeTimeout: Duration = .seconds(10)) throws {
        let freezeNow = !runner.isFrozen && runner.isRunning
        if freezeNow { _ = try runner.freeze(timeout: freezeTimeout) }
        defer { if freezeNow { runner.thaw() } }
        let listed = Set(try runner.vm.system.msrIndexList())
        let vcpus = try runner.vcpus.enumerated().map { i, v in
            try VMSnapshot.captureVCPU(v, index: i, irqchip: true, listedMSRs: listed)
        }
        var devices = SavedDevices(com1: com1.saveState(), i8042Data: i8042Data.saveState(),
                                   i8042Command: i8042Command.saveState(), cmos: nil)
        devices.com2 = com2.saveState()
        let state = VMSnapshotState(
            version: VMSnapshotState.currentVersion, machine: Self.snapshotKind,
            parameters: Self.shape(configuration, cpuidMask: cpuidMask).merging(["commandLine": commandLine]) { a, _ in a },
            ram: [], ramBytes: 0,
            vm: try VMSnapshot.captureVM(runner.vm, irqchip: true, pit: true),
            vcpus: vcpus, devices: devices)
        try VMSnapshot.write(state, memory: guestMemory, to: directory)
    }

    /// A new machine from the snapshot in `directory`, not started (call `start()`).
    /// `configuration` gives the sinks, log and CPUID policy; its topology, memory and CPUID
    /// policy must be the snapshot's (`VMSnapshotError.incompatible` otherwise). Its consoles
    /// start empty.
    public static func restore(from directory: String, configuration: KVMMachineConfiguration,
                               kvm: KVMSystem? = nil) throws -> KVMMachine {
        let (state, ramPath) = try VMSnapshot.load(from: directory)
        guard state.machine == snapshotKind else {
            throw VMSnapshotError.incompatible("not a \(snapshotKind) snapshot (machine \(state.machine))")
        }
        let want = shape(configuration, cpuidMask: configuration.cpuidMask.resolve())
        for (k, v) in want where state.parameters[k] != v {
            throw VMSnapshotError.incompatible("\(k) is \(state.parameters[k] ?? "missing") in the snapshot, \(v) here")
        }
        return try KVMMachine(restoring: state, ramPath: ramPath, config: configuration, kvm: kvm)
    }

    /// What must match between a snapshot and the machine restoring it.
    static func shape(_ c: KVMMachineConfiguration, cpuidMask: CPUIDMask) -> [String: String] {
        let t = c.topology
        return ["topology": "\(t.numaNodes)n\(t.llcs)x\(t.coresPerLLC)x\(t.threadsPerCore)",
                "memoryMiB": String(c.memoryMiB), "cpuidMask": cpuidMask.name]
    }
}
