import CKVM
import KtstrMachine

/// What the vCPU loop does after an exit.
public enum ExitAction: Sendable, Equatable {
    /// Re-enter the guest.
    case resume
    /// The vCPU executed HLT and KVM returned (no in-kernel irqchip): `HaltPolicy` decides.
    case halted
    /// The guest asked to stop (reset, power-off, triple fault): end the run cleanly.
    case shutdown(String)
    /// The VMM cannot continue: end the run with this diagnostic.
    case fatal(String)
}

/// How strictly accesses to nothing are treated. Real PCs read 0xff from empty ports and
/// ignore writes, and a Linux guest probes plenty of absent hardware, so `.ignore` is the
/// default; tiny guests use `.fatal` to prove that an unexpected access stops the run.
public struct ExitPolicy: Sendable, Equatable {
    public enum Unmapped: Sendable, Equatable { case ignore, fatal }
    public var unmappedPorts: Unmapped
    public var unmappedMMIO: Unmapped

    public init(unmappedPorts: Unmapped = .ignore, unmappedMMIO: Unmapped = .ignore) {
        self.unmappedPorts = unmappedPorts
        self.unmappedMMIO = unmappedMMIO
    }

    public static let lenient = ExitPolicy()
}

/// The exit dispatch: one decoded exit → device calls → `ExitAction`.
///
/// Every number here comes from KVM but describes what the guest did, so it is checked
/// before use: I/O sizes must be 1, 2 or 4, `count * size` bytes at `data_offset` must lie
/// inside the vCPU's mapping, MMIO lengths must be 1...8.
public struct ExitDispatch: Sendable {
    public let bus: DeviceBus
    public let policy: ExitPolicy
    public let watchpoints: WatchpointMonitor?
    public let log: Log

    public init(bus: DeviceBus, policy: ExitPolicy = .lenient, watchpoints: WatchpointMonitor? = nil, log: Log = .default) {
        self.bus = bus
        self.policy = policy
        self.watchpoints = watchpoints
        self.log = log
    }

    /// Handles `exit`. `run` is the start of the vCPU's kvm_run mapping, `runSize` its length.
    public func handle(_ exit: VCPUExit, run: UnsafeMutableRawPointer, runSize: Int, cpu: Int) -> ExitAction {
        switch exit {
        case let .io(io):
            return portIO(io, run: run, runSize: runSize, cpu: cpu)
        case let .mmio(m):
            return mmio(m, data: ckvm_run_mmio_data(run.assumingMemoryBound(to: kvm_run.self)), cpu: cpu)
        case .hlt:
            return .halted
        case .shutdown:
            return .shutdown("triple fault on vCPU \(cpu) (KVM_EXIT_SHUTDOWN)")
        case let .systemEvent(type, data):
            switch Int32(bitPattern: type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: return .shutdown("guest powered off (system event shutdown on vCPU \(cpu))")
            case KVM_SYSTEM_EVENT_RESET: return .shutdown("guest reset (system event reset on vCPU \(cpu))")
            case KVM_SYSTEM_EVENT_CRASH: return .fatal("guest crashed (system event crash on vCPU \(cpu), data \(hex(data)))")
            case KVM_SYSTEM_EVENT_WAKEUP, KVM_SYSTEM_EVENT_SUSPEND: return .resume
            default: return .fatal("unsupported system event type \(type) on vCPU \(cpu) (data \(hex(data)))")
            }
        case let .failEntry(reason, hwCPU):
            return .fatal("KVM_EXIT_FAIL_ENTRY on vCPU \(cpu): hardware entry failure reason 0x\(String(reason, radix: 16)) (host cpu \(hwCPU)) — the initial register state is invalid for this CPU")
        case let .internalError(suberror, data):
            let insn = Self.emulationFailureBytes(suberror: suberror, data: data)
                .map { " at instruction bytes " + $0.map { String(format: "%02x", $0) }.joined(separator: " ") } ?? ""
            return .fatal("KVM_EXIT_INTERNAL_ERROR on vCPU \(cpu): \(Self.internalErrorName(suberror)) (suberror \(suberror))\(insn), data \(hex(data))")
        case let .debug(d):
            if let watchpoints, watchpoints.handle(d, cpu: cpu) { return .resume }
            return .fatal("unexpected KVM_EXIT_DEBUG on vCPU \(cpu): exception \(d.exception) at 0x\(String(d.pc, radix: 16)), dr6 0x\(String(d.dr6, radix: 16)) (no watchpoint armed)")
        case .interrupted, .irqWindowOpen:
            return .resume
        case let .unknown(hw):
            return .fatal("KVM_EXIT_UNKNOWN on vCPU \(cpu): hardware exit reason 0x\(String(hw, radix: 16))")
        case let .other(reason):
            return .fatal("unsupported exit \(VCPUExit.name(ofReason: reason)) on vCPU \(cpu)")
        }
    }

    func portIO(_ io: VCPUExit.PortIO, run: UnsafeMutableRawPointer, runSize: Int, cpu: Int) -> ExitAction {
        guard io.size == 1 || io.size == 2 || io.size == 4 else {
            return .fatal("port I/O of size \(io.size) at port 0x\(String(io.port, radix: 16)) on vCPU \(cpu): sizes are 1, 2 or 4")
        }
        // Overflow-safe: offset within the mapping, then count*size within what is left.
        guard io.count >= 0, io.dataOffset <= UInt64(runSize),
              io.count <= (runSize - Int(io.dataOffset)) / io.size else {
            return .fatal("port I/O at 0x\(String(io.port, radix: 16)) on vCPU \(cpu): \(io.count) x \(io.size) bytes at offset \(io.dataOffset) exceed the \(runSize)-byte kvm_run mapping")
        }
        let device = bus.portDevice(at: io.port)
        if device == nil, policy.unmappedPorts == .fatal {
            return .fatal("port I/O \(io.isWrite ? "write" : "read") of \(io.size) bytes at port 0x\(String(io.port, radix: 16)) on vCPU \(cpu): no device there")
        }
        var action = ExitAction.resume
        for i in 0..<io.count {
            let p = run + Int(io.dataOffset) + i * io.size
            if let (dev, offset) = device {
                if io.isWrite {
                    if case let .shutdown(why) = dev.write(offset: offset, from: UnsafeRawBufferPointer(start: p, count: io.size)) {
                        action = .shutdown(why)
                    }
                } else {
                    dev.read(offset: offset, into: UnsafeMutableRawBufferPointer(start: p, count: io.size))
                }
            } else if !io.isWrite {
                // Nothing there: the bus floats high.
                memset(p, 0xff, io.size)
            }
        }
        if device == nil { log.debug("vCPU \(cpu): \(io.isWrite ? "write to" : "read from") unmapped port 0x\(String(io.port, radix: 16))") }
        return action
    }

    func mmio(_ m: VCPUExit.MMIO, data: UnsafeMutablePointer<UInt8>?, cpu: Int) -> ExitAction {
        guard (1...8).contains(m.length), let data else {
            return .fatal("MMIO access of \(m.length) bytes at 0x\(String(m.address, radix: 16)) on vCPU \(cpu): lengths are 1...8")
        }
        let buffer = UnsafeMutableRawBufferPointer(start: data, count: m.length)
        guard let (dev, offset) = bus.mmioDevice(at: m.address, length: m.length) else {
            if policy.unmappedMMIO == .fatal {
                return .fatal("MMIO \(m.isWrite ? "write" : "read") of \(m.length) bytes at 0x\(String(m.address, radix: 16)) on vCPU \(cpu): nothing is mapped there")
            }
            if !m.isWrite { buffer.initializeMemory(as: UInt8.self, repeating: 0xff) }
            log.debug("vCPU \(cpu): MMIO \(m.isWrite ? "write to" : "read from") unmapped 0x\(String(m.address, radix: 16))")
            return .resume
        }
        if m.isWrite {
            if case let .shutdown(why) = dev.write(offset: offset, from: UnsafeRawBufferPointer(buffer)) { return .shutdown(why) }
        } else {
            dev.read(offset: offset, into: buffer)
        }
        return .resume
    }

    /// The instruction KVM's emulator gave up on, when the exit carries it: for
    /// KVM_INTERNAL_ERROR_EMULATION with flag INSTRUCTION_BYTES, data[0] is the flags word and
    /// data[1...2] hold insn_size (1 byte) then up to 15 instruction bytes, little-endian.
    static func emulationFailureBytes(suberror: UInt32, data: [UInt64]) -> [UInt8]? {
        guard Int32(bitPattern: suberror) == KVM_INTERNAL_ERROR_EMULATION, data.count >= 3,
              data[0] & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0 else { return nil }
        var raw: [UInt8] = []
        for word in data[1...2] { for i in 0..<8 { raw.append(UInt8(truncatingIfNeeded: word >> (8 * UInt64(i)))) } }
        let size = min(Int(raw[0]), 15)
        return Array(raw[1..<(1 + size)])
    }

    static func internalErrorName(_ suberror: UInt32) -> String {
        switch Int32(bitPattern: suberror) {
        case KVM_INTERNAL_ERROR_EMULATION: "instruction emulation failed"
        case KVM_INTERNAL_ERROR_SIMUL_EX: "simultaneous exceptions"
        case KVM_INTERNAL_ERROR_DELIVERY_EV: "exit while delivering an event"
        case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "unexpected hardware exit reason"
        default: "internal error"
        }
    }
}

func hex(_ values: [UInt64]) -> String {
    "[" + values.map { "0x" + String($0, radix: 16) }.joined(separator: ", ") + "]"
}
