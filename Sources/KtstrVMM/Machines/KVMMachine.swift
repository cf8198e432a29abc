import Foundation
import KtstrMachine

/// What a `KVMMachine` boots and how.
public struct KVMMachineConfiguration: Sendable {
    /// A bzImage or an ELF vmlinux.
    public var kernel: String
    /// An initramfs (newc cpio, optionally compressed as the kernel supports), or nil.
    public var initrd: [UInt8]?
    /// Appended to the base kernel command line (`KernelCommandLine.base`).
    public var commandLineExtra: String
    public var topology: Topology
    public var memoryMiB: Int
    /// COM1 (kernel console) bytes.
    public var console: ByteSink?
    /// COM2 (agent channel, `@ktstr {json}` lines) bytes.
    public var channel: ByteSink?
    public var cpuidMask: CPUIDMaskPolicy
    public var log: Log

    public init(kernel: String, initrd: [UInt8]? = nil, commandLineExtra: String = "", topology: Topology = .flat(1),
                memoryMiB: Int = 256, console: ByteSink? = nil, channel: ByteSink? = nil,
                cpuidMask: CPUIDMaskPolicy = .automatic, log: Log = .default) {
        self.kernel = kernel; self.initrd = initrd; self.commandLineExtra = commandLineExtra
        self.topology = topology; self.memoryMiB = memoryMiB; self.console = console; self.channel = channel
        self.cpuidMask = cpuidMask; self.log = log
    }
}

/// A configuration the machine cannot boot, with the fix.
public enum KVMMachineError: Error, CustomStringConvertible, Equatable {
    case memoryTooSmall(MiB: Int, needed: Int)
    case tooManyVCPUs(Int)

    public var description: String {
        switch self {
        case let .memoryTooSmall(m, n):
            "\(m) MiB of guest memory cannot hold this kernel (its image and decompression buffer need ~\(n) MiB) — raise --memory"
        case let .tooManyVCPUs(n):
            "\(n) vCPUs need APIC ids above 253, more than an xAPIC machine without interrupt remapping can address — use fewer vCPUs or power-of-two cores per LLC"
        }
    }
}

/// Our own VMM booting Linux on /dev/kvm: direct 64-bit boot of a bzImage or vmlinux, in-kernel
/// irqchip + PIT, ACPI/MP tables for SMP, COM1 console, COM2 agent channel, i8042 reset as
/// shutdown. vCPU threads, freeze and kill come from `VCPURunner`.
public final class KVMMachine: RunnerBackedMachine, @unchecked Sendable {
    public let backend: BackendKind = .kvm
    public let configuration: KVMMachineConfiguration
    public let guestMemory: GuestMemory
    /// The full kernel command line the guest got.
    public let commandLine: String
    /// The CPUID mask in effect (after resolving `.automatic`).
    public let cpuidMask: CPUIDMask
    public let kernelImage: KernelImage
    /// The vCPU threads (watchpoints for the monitor live here: `runner.watchExitKind`).
    public let runner: VCPURunner
    let com1: SerialPortDevice
    let com2: SerialPortDevice
    let i8042Data: I8042Device
    let i8042Command: I8042Device

    /// Builds the whole machine (RAM filled, vCPUs configured); nothing runs until `start()`.
    public init(_ config: KVMMachineConfiguration, kvm: KVMSystem? = nil) throws {
        let topo = config.topology
        guard topo.vcpuCount <= 254 else { throw KVMMachineError.tooManyVCPUs(topo.vcpuCount) }
        // KVM vCPU id = initial APIC id, so a topology with holes in its id space (3 cores
        // per LLC, several LLCs) gets vCPU ids with the same holes.
        let ids = (0..<topo.vcpuCount).map { CPUID.apicID(of: $0, in: topo) }
        guard let maxID = ids.max(), maxID < 254 else { throw KVMMachineError.tooManyVCPUs(topo.vcpuCount) }

        let image = try KernelImage(path: config.kernel)
        let memoryBytes = UInt64(max(0, config.memoryMiB)) << 20
        // The image's end is below 2^53 (KernelImage checks it), but add without trapping anyway.
        let (end, over) = image.occupiedRange.upperBound.addingReportingOverflow(16 << 20)
        let needed = over ? Int.max : Int(end >> 20)
        guard config.memoryMiB >= needed else { throw KVMMachineError.memoryTooSmall(MiB: config.memoryMiB, needed: needed) }

        let system = try kvm ?? KVMSystem()
        try system.requireBasics()
        let mask = config.cpuidMask.resolve()
        let cmdline = KernelCommandLine(extra: (mask.kernelParameters + [config.commandLineExtra]).joined(separator: " "))
        let ram = BootLayout.ramRegions(memoryBytes: memoryBytes)
        let memory = try GuestMemory.anonymous(layout: ram)
        // NUMA: SRAT/SLIT tell the kernel which vCPUs and RAM ranges form each node.
        let numa = config.topology.numaNodes > 1 ? ACPITables.NUMA(topology: config.topology, ramRegions: ram) : nil
        let loaded = try KVMLinuxBoot.loadGuest(image: image, memoryBytes: memoryBytes, initrd: config.initrd,
                                                commandLine: cmdline, apicIDs: ids, numa: numa, into: memory)
        config.log.debug("kvm: entry 0x\(String(loaded.entry, radix: 16)), initrd \(loaded.initrd.map { "at 0x\(String($0.address, radix: 16)) (\($0.size) bytes)" } ?? "none"), cpuid mask \(mask.name)")

        let vm = try system.createVM(memory: memory)
        try KVMLinuxBoot.setUpVM(vm)
        let devices = try Self.devices(vm: vm, config: config)

        let supported = try system.supportedCPUID().map(KVMLinuxBoot.cpuid)
        // The PVM-safe policy (the CPUID mask for emulated kernel code) also completes what
        // KVM's emulator cannot run; with vmx/svm the CPU runs it and nothing is assisted.
        let assist = mask == .emulatedKernelCode ? EmulationAssist() : nil
        runner = try VCPURunner(vm: vm, memory: memory, vcpuIDs: ids.map(Int.init), bus: devices.bus, halt: .irqchip,
                                exitPolicy: .lenient, assist: assist, log: config.log) { index, vcpu in
            try KVMLinuxBoot.setUpVCPU(vcpu, index: index, topology: topo, supported: supported, mask: mask,
                                       entry: loaded.entry, log: config.log)
        }
        self.configuration = config
        self.guestMemory = memory
        self.commandLine = cmdline.description
        self.cpuidMask = mask
        self.kernelImage = image
        (com1, com2, i8042Data, i8042Command) = (devices.com1, devices.com2, devices.i8042Data, devices.i8042Command)
    }

    typealias Devices = (bus: DeviceBus, com1: SerialPortDevice, com2: SerialPortDevice, i8042Data: I8042Device, i8042Command: I8042Device)

    /// COM1 (console, IRQ 4), COM2 (agent channel, IRQ 3) and the i8042 on a new port bus.
    static func devices(vm: KVMVM, config: KVMMachineConfiguration) throws -> Devices {
        var bus = DeviceBus()
        let com1 = SerialPortDevice(sink: config.console ?? { _ in }, irq: .kvm(vm, gsi: Serial16550.com1IRQ, log: config.log))
        try bus.add(com1, ports: Serial16550.com1Base, count: Serial16550.portCount)
        let com2 = SerialPortDevice(sink: config.channel ?? { _ in }, irq: .kvm(vm, gsi: Serial16550.com2IRQ, log: config.log))
        try bus.add(com2, ports: Serial16550.com2Base, count: Serial16550.portCount)
        let data = I8042Device(register: .data), command = I8042Device(register: .command)
        try bus.add(data, ports: I8042.dataPort, count: 1)
        try bus.add(command, ports: I8042.commandPort, count: 1)
        return (bus, com1, com2, data, command)
    }

    /// A machine restored from a snapshot (KVMMachineSnapshot.swift): RAM copy-on-write from
    /// the image, CPUID from `config` as at boot, then the saved KVM and device state.
    init(restoring state: VMSnapshotState, ramPath: String, config: KVMMachineConfiguration, kvm: KVMSystem?) throws {
        let topo = config.topology
        let ids = (0..<topo.vcpuCount).map { CPUID.apicID(of: $0, in: topo) }
        let byIndex = Dictionary(state.vcpus.map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
        guard byIndex.count == ids.count, Set(byIndex.keys) == Set(0..<ids.count),
              ids.enumerated().allSatisfy({ byIndex[$0.offset]?.id == Int($0.element) }) else {
            throw VMSnapshotError.incompatible("the snapshot's vCPUs \(state.vcpus.map(\.id)) are not this topology's \(ids)")
        }
        let system = try kvm ?? KVMSystem()
        try system.requireBasics()
        let mask = config.cpuidMask.resolve()
        let memory = try VMSnapshot.mapRAM(state, ramPath: ramPath)
        let vm = try system.createVM(memory: memory)
        try KVMLinuxBoot.setUpVM(vm)
        try VMSnapshot.restoreVMBeforeVCPUs(vm, state.vm)
        let devices = try Self.devices(vm: vm, config: config)
        let supported = try system.supportedCPUID().map(KVMLinuxBoot.cpuid)
        runner = try VCPURunner(vm: vm, memory: memory, vcpuIDs: ids.map(Int.init), bus: devices.bus, halt: .irqchip,
                                exitPolicy: .lenient, log: config.log) { index, vcpu in
            // CPUID is not in the snapshot: the same table as at boot, before the saved registers.
            try vcpu.setCPUID(CPUID.table(for: index, topology: topo, supported: supported, mask: mask).map(KVMLinuxBoot.cpuid))
            guard let saved = byIndex[index] else { throw VMSnapshotError.incompatible("no state for vCPU \(index)") }
            try VMSnapshot.restoreVCPU(vcpu, saved)
        }
        try VMSnapshot.restoreVMAfterVCPUs(vm, state.vm)
        if let s = state.devices.com1 { devices.com1.restoreState(s) }
        if let s = state.devices.com2 { devices.com2.restoreState(s) }
        if let s = state.devices.i8042Data { devices.i8042Data.restoreState(s) }
        if let s = state.devices.i8042Command { devices.i8042Command.restoreState(s) }
        configuration = config
        guestMemory = memory
        commandLine = state.parameters["commandLine"] ?? ""
        cpuidMask = mask
        kernelImage = try KernelImage(path: config.kernel)
        (com1, com2, i8042Data, i8042Command) = (devices.com1, devices.com2, devices.i8042Data, devices.i8042Command)
    }

    /// Starts the vCPUs (and, under `KTSTR_LOG=debug` with the PVM-safe policy, the RIP sampler).
    public func start() throws {
        try runner.start()
        startRIPSampler()
    }

    /// Host → guest bytes on COM2 (the agent channel's receive side).
    public func sendToChannel(_ bytes: [UInt8]) { com2.send(bytes) }
}

extension KVMMachine {
    /// Which file to boot. On a host without vmx/svm (nested PVM) the bzImage's own
    /// decompressor runs under KVM's instruction emulator and reads the *host's* CPUID (the
    /// instruction is not trapped there), so zstd picks its BMI2 path and dies on SHLX, which
    /// the emulator cannot execute. The ELF vmlinux needs no decompressor: boot it instead
    /// when it is at hand. Returns the path and, when it switched, why.
    public static func bootImage(image: String, vmlinux: String?,
                                 hardwareVirtualization: Bool = CPUID.hostHasHardwareVirtualization()) -> (path: String, note: String?) {
        guard !hardwareVirtualization, let vmlinux, FileManager.default.isReadableFile(atPath: vmlinux),
              !isELF(image) else { return (image, nil) }
        return (vmlinux, "no vmx/svm on this host: booting \(vmlinux) instead of the bzImage (its decompressor cannot run under KVM's emulator)")
    }

    static func isELF(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let magic = (try? h.read(upToCount: 4)) ?? Data()
        return magic == Data([0x7f, 0x45, 0x4c, 0x46])
    }
}
