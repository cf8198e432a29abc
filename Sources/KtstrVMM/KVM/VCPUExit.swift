import CKVM
import KtstrMachine

/// Why KVM_RUN returned to userspace, decoded from `kvm_run` into Swift values (the KVM
/// layer's counterpart of rust-vmm's `VcpuExit`). Pure data: `ExitDispatch` decides what to
/// do with it; the data of port/MMIO exits is reached through `KVMRunPage`.
public enum VCPUExit: Sendable, Equatable {
    public struct PortIO: Sendable, Equatable {
        public var isWrite: Bool
        public var port: UInt16
        /// Bytes per access; KVM promises 1, 2 or 4 (checked before use).
        public var size: Int
        /// Accesses (`rep ins/outs` batches several).
        public var count: Int
        /// Offset of the data from the start of the kvm_run mapping.
        public var dataOffset: UInt64
    }

    public struct MMIO: Sendable, Equatable {
        public var isWrite: Bool
        public var address: UInt64
        /// 1...8 (checked before use).
        public var length: Int
    }

    public struct Debug: Sendable, Equatable {
        public var exception: UInt32
        public var pc: UInt64
        public var dr6: UInt64
        public var dr7: UInt64
    }

    case io(PortIO)
    case mmio(MMIO)
    case hlt
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted (or otherwise hit a shutdown condition).
    case shutdown
    case systemEvent(type: UInt32, data: [UInt64])
    case failEntry(hardwareReason: UInt64, cpu: UInt32)
    case internalError(suberror: UInt32, data: [UInt64])
    case debug(Debug)
    /// KVM_EXIT_INTR: a signal interrupted the guest (exit form of EINTR).
    case interrupted
    case irqWindowOpen
    case unknown(hardwareReason: UInt64)
    /// An exit reason this VMM does not handle (named in diagnostics).
    case other(reason: UInt32)

    /// Reads the exit out of `run`. `ndata` counts are clamped to the arrays' real size.
    public static func decode(_ run: UnsafePointer<kvm_run>) -> VCPUExit {
        let reason = ckvm_run_exit_reason(run)
        switch Int32(bitPattern: reason) {
        case KVM_EXIT_IO:
            return .io(PortIO(isWrite: ckvm_run_io_direction(run) == UInt8(KVM_EXIT_IO_OUT),
                              port: ckvm_run_io_port(run), size: Int(ckvm_run_io_size(run)),
                              count: Int(ckvm_run_io_count(run)), dataOffset: ckvm_run_io_data_offset(run)))
        case KVM_EXIT_MMIO:
            return .mmio(MMIO(isWrite: ckvm_run_mmio_is_write(run) != 0,
                              address: ckvm_run_mmio_phys_addr(run), length: Int(ckvm_run_mmio_len(run))))
        case KVM_EXIT_HLT:
            return .hlt
        case KVM_EXIT_SHUTDOWN:
            return .shutdown
        case KVM_EXIT_SYSTEM_EVENT:
            let n = min(ckvm_run_system_event_ndata(run), 16)
            return .systemEvent(type: ckvm_run_system_event_type(run),
                                data: (0..<n).map { ckvm_run_system_event_data(run, $0) })
        case KVM_EXIT_FAIL_ENTRY:
            return .failEntry(hardwareReason: ckvm_run_fail_entry_reason(run), cpu: ckvm_run_fail_entry_cpu(run))
        case KVM_EXIT_INTERNAL_ERROR:
            let n = min(ckvm_run_internal_ndata(run), ckvm_run_internal_data_capacity())
            return .internalError(suberror: ckvm_run_internal_suberror(run),
                                  data: (0..<n).map { ckvm_run_internal_data(run, $0) })
        case KVM_EXIT_DEBUG:
            return .debug(Debug(exception: ckvm_run_debug_exception(run), pc: ckvm_run_debug_pc(run),
                                dr6: ckvm_run_debug_dr6(run), dr7: ckvm_run_debug_dr7(run)))
        case KVM_EXIT_INTR:
            return .interrupted
        case KVM_EXIT_IRQ_WINDOW_OPEN:
            return .irqWindowOpen
        case KVM_EXIT_UNKNOWN:
            return .unknown(hardwareReason: ckvm_run_hw_exit_reason(run))
        default:
            return .other(reason: reason)
        }
    }

    /// What a KVM_EXIT_SYSTEM_EVENT asks for.
    public enum SystemEventKind: Sendable, Equatable {
        case shutdown, reset, crash, wakeup, suspend
        case other(UInt32)

        public init(type: UInt32) {
            switch Int32(bitPattern: type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: self = .shutdown
            case KVM_SYSTEM_EVENT_RESET: self = .reset
            case KVM_SYSTEM_EVENT_CRASH: self = .crash
            case KVM_SYSTEM_EVENT_WAKEUP: self = .wakeup
            case KVM_SYSTEM_EVENT_SUSPEND: self = .suspend
            default: self = .other(type)
            }
        }
    }

    /// The instruction KVM's emulator gave up on, when the exit carries it: for
    /// KVM_INTERNAL_ERROR_EMULATION with flag INSTRUCTION_BYTES, data[0] is the flags word and
    /// data[1...2] hold insn_size (1 byte) then up to 15 instruction bytes, little-endian.
    public static func emulationFailureBytes(suberror: UInt32, data: [UInt64]) -> [UInt8]? {
        guard Int32(bitPattern: suberror) == KVM_INTERNAL_ERROR_EMULATION, data.count >= 3,
              data[0] & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0 else { return nil }
        var raw: [UInt8] = []
        for word in data[1...2] { for i in 0..<8 { raw.append(UInt8(truncatingIfNeeded: word >> (8 * UInt64(i)))) } }
        let size = min(Int(raw[0]), 15)
        return Array(raw[1..<(1 + size)])
    }

    /// Words for a KVM_EXIT_INTERNAL_ERROR suberror.
    public static func internalErrorName(_ suberror: UInt32) -> String {
        switch Int32(bitPattern: suberror) {
        case KVM_INTERNAL_ERROR_EMULATION: "instruction emulation failed"
        case KVM_INTERNAL_ERROR_SIMUL_EX: "simultaneous exceptions"
        case KVM_INTERNAL_ERROR_DELIVERY_EV: "exit while delivering an event"
        case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "unexpected hardware exit reason"
        default: "internal error"
        }
    }

    /// `KVM_EXIT_*` name for a reason number (diagnostics).
    public static func name(ofReason reason: UInt32) -> String {
        let names: [Int32: String] = [
            KVM_EXIT_UNKNOWN: "KVM_EXIT_UNKNOWN", KVM_EXIT_EXCEPTION: "KVM_EXIT_EXCEPTION",
            KVM_EXIT_IO: "KVM_EXIT_IO", KVM_EXIT_HYPERCALL: "KVM_EXIT_HYPERCALL",
            KVM_EXIT_DEBUG: "KVM_EXIT_DEBUG", KVM_EXIT_HLT: "KVM_EXIT_HLT", KVM_EXIT_MMIO: "KVM_EXIT_MMIO",
            KVM_EXIT_IRQ_WINDOW_OPEN: "KVM_EXIT_IRQ_WINDOW_OPEN", KVM_EXIT_SHUTDOWN: "KVM_EXIT_SHUTDOWN",
            KVM_EXIT_FAIL_ENTRY: "KVM_EXIT_FAIL_ENTRY", KVM_EXIT_INTR: "KVM_EXIT_INTR",
            KVM_EXIT_SET_TPR: "KVM_EXIT_SET_TPR", KVM_EXIT_TPR_ACCESS: "KVM_EXIT_TPR_ACCESS",
            KVM_EXIT_NMI: "KVM_EXIT_NMI", KVM_EXIT_INTERNAL_ERROR: "KVM_EXIT_INTERNAL_ERROR",
            KVM_EXIT_OSI: "KVM_EXIT_OSI", KVM_EXIT_WATCHDOG: "KVM_EXIT_WATCHDOG",
            KVM_EXIT_EPR: "KVM_EXIT_EPR", KVM_EXIT_SYSTEM_EVENT: "KVM_EXIT_SYSTEM_EVENT",
            KVM_EXIT_IOAPIC_EOI: "KVM_EXIT_IOAPIC_EOI", KVM_EXIT_HYPERV: "KVM_EXIT_HYPERV",
            KVM_EXIT_X86_RDMSR: "KVM_EXIT_X86_RDMSR", KVM_EXIT_X86_WRMSR: "KVM_EXIT_X86_WRMSR",
            KVM_EXIT_DIRTY_RING_FULL: "KVM_EXIT_DIRTY_RING_FULL", KVM_EXIT_AP_RESET_HOLD: "KVM_EXIT_AP_RESET_HOLD",
            KVM_EXIT_X86_BUS_LOCK: "KVM_EXIT_X86_BUS_LOCK", KVM_EXIT_XEN: "KVM_EXIT_XEN",
            KVM_EXIT_NOTIFY: "KVM_EXIT_NOTIFY",
        ]
        return names[Int32(bitPattern: reason)] ?? "exit reason \(reason)"
    }
}
