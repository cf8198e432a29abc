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
    private let consoleBytes = ByteCollector()

    /// Everything COM1 received so far, as bytes.
    public var consoleOutput: [UInt8] { consoleBytes.contents }

    /// Everything COM1 received so far.
    public var console: String { consoleBytes.text }

    /// `devices`: add more devices to the bus (tests). `irqchip`: create the in-kernel PIC/IOAPIC/LAPIC and PIT (as a Linux guest gets) and
    /// wire COM1's interrupt to GSI 4. HLT then stays in the kernel; APs wait for INIT/SIPI.
    public init(payload: [UInt8], mode: TinyGuestMode, vcpus: Int = 1,
                exitPolicy: ExitPolicy = ExitPolicy(unmappedPorts: .ignore, unmappedMMIO: .fatal),
                irqchip: Bool = false, kvm: KVMSystem? = nil, log: Log = .default,
                devices: (inout DeviceBus) throws -> Void = { _ in }) throws {
        let system = try kvm ?? KVMSystem()
        try system.requireBasics()
        let memory = try GuestMemory.anonymous(layout: [(gpa: 0, size: Self.memoryBytes)])
        guard payload.count <= Int(Self.dataAddress - Self.loadAddress) else {
            throw KVMError.invalidConfiguration("payload of \(payload.count) bytes does not fit below 0x\(String(Self.dataAddress, radix: 16))")
        }
        try memory.write(payload, at: Self.loadAddress)
        if mode == .long { try X86InitialState.writeLongModeTables(into: memory) }

        let vm = try system.createVM(memory: memory)
        var irq: IRQLine?
        if irqchip {
            try vm.setTSSAddress(0xfffb_d000)
            try vm.setIdentityMapAddress(0xfffb_c000)
            try vm.createIRQChip()
            try vm.createPIT2()
            irq = IRQLine.kvm(vm, gsi: Serial16550.com1IRQ, log: log)
        }
        var bus = DeviceBus()
        try bus.add(SerialPortDevice(sink: consoleBytes.sink, irq: irq),
                    ports: Serial16550.com1Base, count: Serial16550.portCount)
        try bus.addI8042()
        try bus.addCMOSClock()
        try devices(&bus)

        self.mode = mode
        self.guestMemory = memory
        self.runner = try VCPURunner(vm: vm, memory: memory, vcpuCount: vcpus, bus: bus,
                                     halt: irqchip ? .irqchip : .tinyGuest, exitPolicy: exitPolicy, log: log) { vcpu in
            let rdi = Self.dataAddress + 64 * UInt64(vcpu.id)
            switch mode {
            case .real: try X86InitialState.realMode(vcpu, rip: Self.loadAddress) { $0.rdi = rdi }
            case .long: try X86InitialState.longMode(vcpu, rip: Self.loadAddress) { $0.rdi = rdi }
            }
        }
    }

    /// The per-vCPU counter written by `TinyGuestPayloads.counterLoop`.
    public func counter(of cpu: Int) throws -> UInt64 {
        try guestMemory.read(UInt64.self, at: Self.dataAddress + 64 * UInt64(cpu))
    }
}
