import KtstrMachine

/// The monitor's hardware fast path: a DR0 write watchpoint on `scx_sched.exit_kind`.
extension KVMMachine: ExitKindWatchpoint {
    /// Debug-register watchpoints fire only where KVM runs the guest on hardware
    /// virtualization; under nested PVM (no vmx/svm) they never do, so the monitor polls.
    public var debugRegistersWork: Bool { Self.hostDebugRegistersWork }
    static let hostDebugRegistersWork = CPUID.hostHasHardwareVirtualization()

    public func armExitKindWatchpoint(kva: UInt64, gpa: UInt64, threshold: UInt32,
                                      onTrigger: @escaping @Sendable (Int) -> Void) -> Bool {
        guard debugRegistersWork, let host = try? guestMemory.hostAddress(of: gpa, length: 4) else { return false }
        do {
            try runner.watchExitKind(guestVirtual: kva, host: UnsafeRawPointer(host), threshold: threshold) {
                onTrigger(Int(Int32(bitPattern: $0)))
            }
            return true
        } catch {
            configuration.log.warning("exit_kind watchpoint not armed (the monitor keeps polling): \(error)")
            return false
        }
    }
}
