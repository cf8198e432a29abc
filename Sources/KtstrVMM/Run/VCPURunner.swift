import Foundation
import Glibc
import Synchronization
import KtstrMachine

/// Runs the vCPUs of one VM, one dedicated pthread each (never the Swift cooperative pool),
/// and implements the run loop, the stop-everything-on-shutdown rule, and the freeze
/// rendezvous. The boot engineer's KVMMachine and the tiny-guest machine are built on it.
///
/// Usage: create a `KVMVM` (`KVMSystem.createVM(memory:)`), add an irqchip/PIT if wanted,
/// fill a `DeviceBus`, then `VCPURunner(vm:memory:vcpuCount:...) { vcpu in set regs... }`,
/// `start()`, then `freeze`/`thaw` any number of times, then `wait(timeout:)` or `kill()`.
/// Dropping the runner kills and joins its threads.
public final class VCPURunner: @unchecked Sendable {
    private let core: RunCore
    /// Handles debug exits (the one passed to init, or a fresh one).
    public let watchpoints: WatchpointMonitor
    private let armed = Mutex(WatchpointSet())
    private let unhandled: UnhandledAccessCounter

    public var vm: KVMVM { core.vm }
    public var memory: GuestMemory { core.memory }
    /// The vCPUs in index order (0 is the BSP; `vcpu.id` is the KVM/APIC id). Touch their registers only while frozen
    /// or before `start()`.
    public var vcpus: [KVMVCPU] { core.slots.map(\.vcpu) }
    public var vcpuCount: Int { core.slots.count }

    /// Creates `vcpuCount` vCPUs (ids 0..<n) and calls `setup` on each, in order, on the
    /// calling thread: set CPUID, MSRs, LAPIC, sregs, regs, FPU there.
    public convenience init(vm: KVMVM, memory: GuestMemory, vcpuCount: Int, bus: DeviceBus,
                            halt: HaltPolicy, exitPolicy: ExitPolicy = .lenient,
                            watchpoints: WatchpointMonitor? = nil, assist: EmulationAssist? = nil, log: Log = .default,
                            setup: (KVMVCPU) throws -> Void) throws {
        guard vcpuCount >= 1 else { throw KVMError.invalidConfiguration("a VM needs at least one vCPU") }
        try self.init(vm: vm, memory: memory, vcpuIDs: Array(0..<vcpuCount), bus: bus, halt: halt,
                      exitPolicy: exitPolicy, watchpoints: watchpoints, assist: assist, log: log) { _, vcpu in try setup(vcpu) }
    }

    /// Creates one vCPU per entry of `vcpuIDs` (the KVM vCPU id, i.e. the initial APIC id on
    /// x86 — topologies with holes in their APIC ids need this) and calls `setup(index, vcpu)`
    /// in order. Index 0 is the BSP; snapshots and diagnostics use the index as "cpu".
    public init(vm: KVMVM, memory: GuestMemory, vcpuIDs: [Int], bus: DeviceBus,
                halt: HaltPolicy, exitPolicy: ExitPolicy = .lenient,
                watchpoints: WatchpointMonitor? = nil, assist: EmulationAssist? = nil, log: Log = .default,
                setup: (_ index: Int, _ vcpu: KVMVCPU) throws -> Void) throws {
        guard !vcpuIDs.isEmpty else { throw KVMError.invalidConfiguration("a VM needs at least one vCPU") }
        guard Set(vcpuIDs).count == vcpuIDs.count, vcpuIDs.allSatisfy({ $0 >= 0 }) else {
            throw KVMError.invalidConfiguration("vCPU ids \(vcpuIDs) must be distinct and non-negative")
        }
        var slots: [VCPUSlot] = []
        for (index, id) in vcpuIDs.enumerated() {
            let v = try vm.createVCPU(id: id)
            try setup(index, v)
            slots.append(VCPUSlot(index: index, vcpu: v))
        }
        let monitor = watchpoints ?? WatchpointMonitor()
        self.watchpoints = monitor
        let unhandled = UnhandledAccessCounter()
        self.unhandled = unhandled
        core = try RunCore(vm: vm, memory: memory, slots: slots,
                           dispatch: ExitDispatch(bus: bus, policy: exitPolicy, watchpoints: monitor,
                                                  unhandled: unhandled, log: log),
                           halt: halt, assist: assist, log: log)
    }

    deinit { core.teardown() }

    /// Starts one thread per vCPU.
    public func start() throws { try core.start() }

    /// Stops every vCPU (completing any in-flight port/MMIO access first), captures their
    /// registers on their own threads, and returns one snapshot per vCPU ordered by id.
    public func freeze(timeout: Duration) throws(FreezeError) -> [VCPURegisterSnapshot] {
        try core.freeze(timeout: timeout)
    }

    /// Lets frozen vCPUs run again (no-op when not frozen).
    public func thaw() { core.thaw() }

    /// Started and not stopped (killed, shut down, timed out) yet.
    public var isRunning: Bool { core.started.load(ordering: .sequentiallyConsistent) && core.stoppedReason() == nil }

    public var isFrozen: Bool { core.freezeRequested.load(ordering: .sequentiallyConsistent) }

    /// Blocks until every vCPU thread has ended, or kills the machine after `timeout`.
    public func wait(timeout: Duration) -> MachineExit { core.wait(timeout: timeout) }

    /// Stops the guest now (any thread, any number of times). A kill while frozen wins.
    public func kill() { core.stop(.killed, detail: "killed") }

    /// Port and MMIO accesses no device handled so far (any thread).
    public var unhandledAccesses: UnhandledAccesses { unhandled.snapshot }

    /// Instructions completed for KVM's emulator so far (nil without an `EmulationAssist`).
    public var emulationAssists: [String: Int]? { core.assist?.completed }

    /// Human detail of how the run ended (shutdown reason, fatal diagnostic), once it has.
    public var stopDetail: String? { core.stopDetail }

    /// The watchpoints currently armed on every vCPU.
    public var armedWatchpoints: WatchpointSet { armed.withLock { $0 } }

    /// Arms `set` on every vCPU (KVM_SET_GUEST_DEBUG; an empty set disarms). Running vCPUs
    /// are frozen briefly so the ioctl happens while they are parked.
    public func setWatchpoints(_ set: WatchpointSet, freezeTimeout: Duration = .seconds(1)) throws {
        try core.withVCPUsParked(timeout: freezeTimeout) {
            for s in core.slots { try s.vcpu.setGuestDebug(set.guestDebug) }
        }
        armed.withLock { $0 = set }
    }

    /// The exit_kind watch: DR0 on `guestVirtual` (the scheduler's `exit_kind`, 4 bytes),
    /// gated on the value at `host` (the same word through `guestMemory`) being ≥ `threshold`;
    /// `onTrigger` runs once, on the vCPU thread that hit (do not freeze from it). Debug
    /// registers do not fire on every host (nested PVM): poll the word there instead.
    public func watchExitKind(guestVirtual: UInt64, host: UnsafeRawPointer, threshold: UInt32,
                              onTrigger: (@Sendable (UInt32) -> Void)?) throws {
        var set = armedWatchpoints
        try set.arm(slot: 0, guestVirtual: guestVirtual)
        watchpoints.watchExitKind(host: host, threshold: threshold, onTrigger: onTrigger)
        try setWatchpoints(set)
    }
}

/// Per-vCPU state shared between its thread and the coordinator.
final class VCPUSlot: @unchecked Sendable {
    let index: Int
    let vcpu: KVMVCPU
    /// The freeze generation this vCPU has parked for (Release-stored by the vCPU thread
    /// after `snapshot` is written; Acquire-loaded by the coordinator).
    let parkedGeneration = Atomic<UInt64>(0)
    let exited = Atomic<Bool>(false)
    /// Written by the vCPU thread before publishing `parkedGeneration`.
    var snapshot: VCPURegisterSnapshot?

    init(index: Int, vcpu: KVMVCPU) {
        self.index = index
        self.vcpu = vcpu
    }
}
