import Foundation
import Synchronization
import KtstrMachine

/// How a tiny guest's payload expects the vCPU: where it starts and in which mode.
public enum TinyGuestMode: String, Sendable, CaseIterable, CustomStringConvertible {
    /// 16-bit real mode, flat segments (CS = 0).
    case real
    /// 64-bit long mode, identity-mapped first GiB.
    case long
    public var description: String { rawValue }
}

/// A VM for a hand-assembled payload: 2 MiB of RAM at 0, the payload at `loadAddress`;
/// COM1 (console, collected in `console`), the i8042 and the CMOS clock on the port bus; no
/// irqchip (unless asked), HLT on the BSP ends the run. Proves the KVM layer, the exit
/// dispatch and the freeze rendezvous without a kernel.
public final class TinyGuestMachine: RunnerBackedMachine, @unchecked Sendable {
    public static let loadAddress: UInt64 = 0x1000
    public static let memoryBytes: UInt64 = 2 << 20
    /// Per-vCPU scratch (e.g. the counter of `counterLoop`): vCPU i gets `dataAddress + 64*i`
    /// in rdi.
    public static let dataAddress: UInt64 = 0x2000

    public let backend: BackendKind = .kvm
    public let mode: TinyGuestMode
    public let guestMemory: GuestMemory
    public let runner: VCPURunner
    /// Whether the in-kernel PIC/IOAPIC/LAPIC and PIT exist.
    public let irqchip: Bool
    private let consoleBytes = ByteCollector()
    private let com1: SerialPortDevice
    private let i8042Data = I8042Device(register: .data)
    private let i8042Command = I8042Device(register: .command)
    private let cmos = CMOSClockDevice()

    /// Everything COM1 received so far, as bytes.
    public var consoleOutput: [UInt8] { consoleBytes.contents }

    /// How many bytes COM1 received so far (cheap: no copy).
    public var consoleByteCount: Int { consoleBytes.count }

    /// Everything COM1 received so far.
    public var console: String { consoleBytes.text }

    /// `devices`: add more devices to the bus (tests). `irqchip`: create the in-kernel PIC/IOAPIC/LAPIC and PIT (as a Linux guest gets) and
    /// wire COM1's interrupt to GSI 4. HLT then stays in the kernel; APs wait for INIT/SIPI.
    /// `memoryBytes`: RAM at 0 (default 2 MiB; a multiple of 4 KiB). `assist`: complete what
    /// KVM's emulator cannot run (as KVMMachine does under the PVM-safe policy).
    public convenience init(payload: [UInt8], mode: TinyGuestMode, vcpus: Int = 1,
                            exitPolicy: ExitPolicy = ExitPolicy(unmappedPorts: .ignore, unmappedMMIO: .fatal),
                            irqchip: Bool = false, memoryBytes: UInt64 = TinyGuestMachine.memoryBytes,
                            kvm: KVMSystem? = nil, assist: EmulationAssist? = nil, log: Log = .default,
                            devices: (inout DeviceBus) throws -> Void = { _ in }) throws {
        let system = try kvm ?? KVMSystem()
        try system.requireBasics()
        guard memoryBytes >= 0x10000, memoryBytes % 4096 == 0 else {
            throw KVMError.invalidConfiguration("tiny guest RAM of \(memoryBytes) bytes: at least 64 KiB, a multiple of 4 KiB")
        }
        let memory = try GuestMemory.anonymous(layout: [(gpa: 0, size: memoryBytes)])
        guard payload.count <= Int(Self.dataAddress - Self.loadAddress) else {
            throw KVMError.invalidConfiguration("payload of \(payload.count) bytes does not fit below 0x\(String(Self.dataAddress, radix: 16))")
        }
        try memory.write(payload, at: Self.loadAddress)
        if mode == .long { try X86InitialState.writeLongModeTables(into: memory) }
        let vm = try system.createVM(memory: memory)
        try self.init(vm: vm, memory: memory, mode: mode, vcpus: vcpus, exitPolicy: exitPolicy, irqchip: irqchip,
                      assist: assist, log: log, devices: devices, beforeVCPUs: { _ in }) { vcpu in
            let rdi = Self.dataAddress + 64 * UInt64(vcpu.id)
            switch mode {
            case .real: try X86InitialState.realMode(vcpu, rip: Self.loadAddress) { $0.rdi = rdi }
            case .long: try X86InitialState.longMode(vcpu, rip: Self.loadAddress) { $0.rdi = rdi }
            }
        }
    }

    private init(vm: KVMVM, memory: GuestMemory, mode: TinyGuestMode, vcpus: Int, exitPolicy: ExitPolicy,
                 irqchip: Bool, assist: EmulationAssist? = nil, log: Log, devices: (inout DeviceBus) throws -> Void,
                 beforeVCPUs: (KVMVM) throws -> Void, setup: (KVMVCPU) throws -> Void) throws {
        var irq: IRQLine?
        if irqchip {
            try vm.setTSSAddress(0xfffb_d000)
            try vm.setIdentityMapAddress(0xfffb_c000)
            try vm.createIRQChip()
            try vm.createPIT2()
            irq = IRQLine.kvm(vm, gsi: Serial16550.com1IRQ, log: log)
        }
        try beforeVCPUs(vm)
        let com1 = SerialPortDevice(sink: consoleBytes.sink, irq: irq)
        var bus = DeviceBus()
        try bus.add(com1, ports: Serial16550.com1Base, count: Serial16550.portCount)
        try bus.add(i8042Data, ports: I8042.dataPort, count: 1)
        try bus.add(i8042Command, ports: I8042.commandPort, count: 1)
        try bus.add(cmos, ports: CMOSClock.indexPort, count: 2)
        try devices(&bus)

        self.com1 = com1
        self.mode = mode
        self.irqchip = irqchip
        self.guestMemory = memory
        self.runner = try VCPURunner(vm: vm, memory: memory, vcpuCount: vcpus, bus: bus,
                                     halt: irqchip ? .irqchip : .tinyGuest, exitPolicy: exitPolicy, assist: assist, log: log,
                                     setup: setup)
    }

    // MARK: snapshot and restore

    /// Writes a snapshot of this machine to `directory` (see `VMSnapshot`): freezes it for
    /// the duration unless it is frozen already (or not started).
    public func snapshot(to directory: String, freezeTimeout: Duration = .seconds(2)) throws {
        let freezeNow = !runner.isFrozen && runner.isRunning
        if freezeNow { _ = try runner.freeze(timeout: freezeTimeout) }
        defer { if freezeNow { runner.thaw() } }
        let listed = Set(try runner.vm.system.msrIndexList())
        let vcpus = try runner.vcpus.enumerated().map { i, v in
            try VMSnapshot.captureVCPU(v, index: i, irqchip: irqchip, listedMSRs: listed)
        }
        let state = VMSnapshotState(
            version: VMSnapshotState.currentVersion, machine: "tiny-guest",
            parameters: ["mode": mode.rawValue, "irqchip": String(irqchip)],
            ram: [], ramBytes: 0,
            vm: try VMSnapshot.captureVM(runner.vm, irqchip: irqchip, pit: irqchip),
            vcpus: vcpus,
            devices: SavedDevices(com1: com1.saveState(), i8042Data: i8042Data.saveState(),
                                  i8042Command: i8042Command.saveState(), cmos: cmos.saveState()))
        try VMSnapshot.write(state, memory: guestMemory, to: directory)
    }

    /// A new machine from the snapshot in `directory`: RAM mapped copy-on-write from the
    /// image, KVM and device state restored, not started (call `start()`). Its console
    /// starts empty: it holds what the restored guest prints from the snapshot point on.
    public static func restore(from directory: String,
                               exitPolicy: ExitPolicy = ExitPolicy(unmappedPorts: .ignore, unmappedMMIO: .fatal),
                               kvm: KVMSystem? = nil, log: Log = .default) throws -> TinyGuestMachine {
        let (state, ramPath) = try VMSnapshot.load(from: directory)
        guard state.machine == "tiny-guest", let modeName = state.parameters["mode"],
              let mode = TinyGuestMode(rawValue: modeName), let irqchipText = state.parameters["irqchip"],
              let irqchip = Bool(irqchipText) else {
            throw VMSnapshotError.incompatible("not a tiny-guest snapshot (machine \(state.machine), \(state.parameters))")
        }
        let byID = Dictionary(state.vcpus.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        guard byID.count == state.vcpus.count, Set(byID.keys) == Set(0..<state.vcpus.count) else {
            throw VMSnapshotError.incompatible("vCPU ids \(state.vcpus.map(\.id)) are not 0..<\(state.vcpus.count)")
        }
        let system = try kvm ?? KVMSystem()
        try system.requireBasics()
        let memory = try VMSnapshot.mapRAM(state, ramPath: ramPath)
        let vm = try system.createVM(memory: memory)
        let m = try TinyGuestMachine(vm: vm, memory: memory, mode: mode, vcpus: state.vcpus.count,
                                     exitPolicy: exitPolicy, irqchip: irqchip, log: log, devices: { _ in },
                                     beforeVCPUs: { vm in try VMSnapshot.restoreVMBeforeVCPUs(vm, state.vm) }) { vcpu in
            guard let saved = byID[vcpu.id] else { throw VMSnapshotError.incompatible("no state for vCPU \(vcpu.id)") }
            try VMSnapshot.restoreVCPU(vcpu, saved)
        }
        try VMSnapshot.restoreVMAfterVCPUs(vm, state.vm)
        if let s = state.devices.com1 { m.com1.restoreState(s) }
        if let s = state.devices.i8042Data { m.i8042Data.restoreState(s) }
        if let s = state.devices.i8042Command { m.i8042Command.restoreState(s) }
        if let s = state.devices.cmos { m.cmos.restoreState(s) }
        return m
    }

    /// The per-vCPU counter written by `TinyGuestPayloads.counterLoop`.
    public func counter(of cpu: Int) throws -> UInt64 {
        try guestMemory.read(UInt64.self, at: Self.dataAddress + 64 * UInt64(cpu))
    }
}
