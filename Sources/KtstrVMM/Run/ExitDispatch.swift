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
/// inside the vCPU's mapping (`KVMRunPage.ioData`), MMIO lengths must be 1...8. Accesses no
/// device claims are counted in `unhandled` whatever the policy says.
public struct ExitDispatch: Sendable {
    public let bus: DeviceBus
    public let policy: ExitPolicy
    public let watchpoints: WatchpointMonitor?
    public let unhandled: UnhandledAccessCounter
    public let log: Log

    public init(bus: DeviceBus, policy: ExitPolicy = .lenient, watchpoints: WatchpointMonitor? = nil,
                unhandled: UnhandledAccessCounter = UnhandledAccessCounter(), log: Log = .default) {
        self.bus = bus
        self.policy = policy
        self.watchpoints = watchpoints
        self.unhandled = unhandled
        self.log = log
    }

    /// Handles `exit`; `page` is the vCPU's kvm_run mapping it came from (I/O and MMIO data).
    public func handle(_ exit: VCPUExit, page: KVMRunPage, cpu: Int) -> ExitAction {
        switch exit {
        case let .io(io):
            return portIO(io, page: page, cpu: cpu)
        case let .mmio(m):
            return mmio(m, page: page, cpu: cpu)
        case .hlt:
            return .halted
        case .shutdown:
            return .shutdown("triple fault on vCPU \(cpu) (KVM_EXIT_SHUTDOWN)")
        case let .systemEvent(type, data):
            switch VCPUExit.SystemEventKind(type: type) {
            case .shutdown: return .shutdown("guest powered off (system event shutdown on vCPU \(cpu))")
            case .reset: return .shutdown("guest reset (system event reset on vCPU \(cpu))")
            case .crash: return .fatal("guest crashed (system event crash on vCPU \(cpu), data \(hex(data)))")
            case .wakeup, .suspend: return .resume
            case .other: return .fatal("unsupported system event type \(type) on vCPU \(cpu) (data \(hex(data)))")
            }
        case let .failEntry(reason, hwCPU):
            return .fatal("KVM_EXIT_FAIL_ENTRY on vCPU \(cpu): hardware entry failure reason 0x\(String(reason, radix: 16)) (host cpu \(hwCPU)) — the initial register state is invalid for this CPU")
        case let .internalError(suberror, data):
            let insn = VCPUExit.emulationFailureBytes(suberror: suberror, data: data)
                .map { " at instruction bytes " + $0.map { String(format: "%02x", $0) }.joined(separator: " ") } ?? ""
            return .fatal("KVM_EXIT_INTERNAL_ERROR on vCPU \(cpu): \(VCPUExit.internalErrorName(suberror)) (suberror \(suberror))\(insn), data \(hex(data))")
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

    func portIO(_ io: VCPUExit.PortIO, page: KVMRunPage, cpu: Int) -> ExitAction {
        guard io.size == 1 || io.size == 2 || io.size == 4 else {
            return .fatal("port I/O of size \(io.size) at port 0x\(String(io.port, radix: 16)) on vCPU \(cpu): sizes are 1, 2 or 4")
        }
        guard let data = page.ioData(io) else {
            return .fatal("port I/O at 0x\(String(io.port, radix: 16)) on vCPU \(cpu): \(io.count) x \(io.size) bytes at offset \(io.dataOffset) exceed the \(page.size)-byte kvm_run mapping")
        }
        guard let (dev, offset) = bus.portDevice(at: io.port) else {
            unhandled.recordPort(io.port, isWrite: io.isWrite, count: io.count)
            if policy.unmappedPorts == .fatal {
                return .fatal("port I/O \(io.isWrite ? "write" : "read") of \(io.size) bytes at port 0x\(String(io.port, radix: 16)) on vCPU \(cpu): no device there")
            }
            // Nothing there: the bus floats high.
            if !io.isWrite { data.initializeMemory(as: UInt8.self, repeating: 0xff) }
            log.debug("vCPU \(cpu): \(io.isWrite ? "write to" : "read from") unmapped port 0x\(String(io.port, radix: 16))")
            return .resume
        }
        var action = ExitAction.resume
        for i in 0..<io.count {
            let element = UnsafeMutableRawBufferPointer(rebasing: data[(i * io.size)..<((i + 1) * io.size)])
            if io.isWrite {
                if case let .shutdown(why) = dev.write(offset: offset, from: UnsafeRawBufferPointer(element)) {
                    action = .shutdown(why)
                }
            } else {
                dev.read(offset: offset, into: element)
            }
        }
        return action
    }

    func mmio(_ m: VCPUExit.MMIO, page: KVMRunPage, cpu: Int) -> ExitAction {
        guard let buffer = page.mmioData(m) else {
            return .fatal("MMIO access of \(m.length) bytes at 0x\(String(m.address, radix: 16)) on vCPU \(cpu): lengths are 1...8")
        }
        guard let (dev, offset) = bus.mmioDevice(at: m.address, length: m.length) else {
            unhandled.recordMMIO(m.address, isWrite: m.isWrite)
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
}

func hex(_ values: [UInt64]) -> String {
    "[" + values.map { "0x" + String($0, radix: 16) }.joined(separator: ", ") + "]"
}
