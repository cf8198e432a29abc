/// Which VMM runs the guest. Reported in every `RunOutcome`.
public enum BackendKind: String, Codable, Sendable, CaseIterable {
    /// Our own VMM over /dev/kvm (KVMMachine).
    case kvm
    /// qemu-system-x86_64 with -accel kvm.
    case qemuKVM = "qemu-kvm"
    /// qemu-system-x86_64 with -accel tcg (software emulation; works everywhere).
    case qemuTCG = "qemu-tcg"
}

/// How a machine ended.
public enum MachineExit: Sendable, Equatable, CustomStringConvertible {
    /// The guest powered off or reset (i8042 0xFE, triple fault, SYSTEM_EVENT, qemu exit 0).
    case shutdown
    /// The VMM could not continue (FAIL_ENTRY, INTERNAL_ERROR, unsupported exit, qemu crash).
    case fatal(String)
    /// The deadline passed; the machine was killed.
    case timeout
    /// `kill()` was called.
    case killed

    public var description: String {
        switch self {
        case .shutdown: "shutdown"
        case let .fatal(why): "fatal: \(why)"
        case .timeout: "timeout"
        case .killed: "killed"
        }
    }
}

/// A running guest, whichever backend runs it. The monitor and the failure dump only use
/// `guestMemory` and `freeze()` snapshots, so they work the same on KVM and QEMU.
///
/// Lifecycle: init (configured, nothing running) → `start()` → any number of
/// `freeze()`/`thaw()` pairs → `wait(timeout:)` or `kill()`. Teardown (fds, processes,
/// /dev/shm files) happens on every path, at the latest in deinit.
public protocol Machine: AnyObject, Sendable {
    var backend: BackendKind { get }
    var vcpuCount: Int { get }
    /// Host mapping of guest RAM; valid from `start()` until the machine is torn down.
    var guestMemory: GuestMemory { get }
    func start() throws
    /// Stops every vCPU; returns one snapshot per vCPU (ordered by cpu). Throws when a vCPU
    /// does not park within `timeout` (naming it) or the machine is gone.
    func freeze(timeout: Duration) throws -> [VCPURegisterSnapshot]
    func thaw() throws
    /// Blocks until the guest stops, or kills it when `timeout` passes (→ `.timeout`).
    func wait(timeout: Duration) -> MachineExit
    /// Stops the guest now; safe to call from any thread, any number of times.
    func kill()
    /// Port and MMIO accesses no device handled so far, per port / address (any thread).
    var unhandledAccesses: UnhandledAccesses { get }
}

extension Machine {
    /// Backends that cannot see individual accesses (QEMU) report none.
    public var unhandledAccesses: UnhandledAccesses { .none }
}

/// A machine that can latch a write to `scx_sched.exit_kind` in hardware (KVMMachine's DR0
/// watchpoint, where debug registers work). The failure monitor arms it whenever `scx_root`
/// resolves to a new scheduler; polling stays on as the fallback (PVM and QEMU never fire).
public protocol ExitKindWatchpoint: AnyObject, Sendable {
    /// Arms a 4-byte write watchpoint on `kva` (guest-physical `gpa`, for the host-side value
    /// gate); `onTrigger` runs (on any thread, e.g. the vCPU's: it must not freeze) with the
    /// stored value when a write leaves a value ≥ `threshold`. Returns false when the machine
    /// cannot watch (no working debug registers).
    func armExitKindWatchpoint(kva: UInt64, gpa: UInt64, threshold: UInt32,
                               onTrigger: @escaping @Sendable (Int) -> Void) -> Bool
}
