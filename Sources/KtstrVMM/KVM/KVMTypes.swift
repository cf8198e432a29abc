import CKVM
import KtstrMachine

// The <linux/kvm.h> structures the boot and run code fill, under Swift names, as rust-vmm's
// kvm-bindings exposes them: only Sources/KtstrVMM/KVM imports CKVM, everything above works
// on these names and the typed methods of KVMVCPU / KVMVM.

public typealias KVMRegisters = kvm_regs
public typealias KVMSpecialRegisters = kvm_sregs
public typealias KVMSegment = kvm_segment
public typealias KVMFPUState = kvm_fpu
public typealias KVMCPUIDEntry = kvm_cpuid_entry2
public typealias KVMLAPICState = kvm_lapic_state
public typealias KVMVCPUEvents = kvm_vcpu_events
public typealias KVMGuestDebug = kvm_guest_debug

/// KVM_{GET,SET}_MP_STATE values.
public struct KVMMPState: RawRepresentable, Sendable, Equatable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let runnable = KVMMPState(rawValue: UInt32(KVM_MP_STATE_RUNNABLE))
    /// An AP waiting for INIT/SIPI.
    public static let uninitialized = KVMMPState(rawValue: UInt32(KVM_MP_STATE_UNINITIALIZED))
    public static let initReceived = KVMMPState(rawValue: UInt32(KVM_MP_STATE_INIT_RECEIVED))
    public static let halted = KVMMPState(rawValue: UInt32(KVM_MP_STATE_HALTED))
    public static let sipiReceived = KVMMPState(rawValue: UInt32(KVM_MP_STATE_SIPI_RECEIVED))

    public var description: String {
        switch self {
        case .runnable: "runnable"
        case .uninitialized: "uninitialized"
        case .initReceived: "init-received"
        case .halted: "halted"
        case .sipiReceived: "sipi-received"
        default: "mp_state \(rawValue)"
        }
    }
}

extension KVMGuestDebug {
    /// Guest debugging off (the KVM_SET_GUEST_DEBUG argument that disarms everything).
    public static var disabled: KVMGuestDebug { kvm_guest_debug() }

    /// ENABLE|USE_HW_BP with DR0...DR3 = `addresses` (missing ones 0) and DR7 = `dr7`.
    public static func hardwareBreakpoints(_ addresses: [UInt64], dr7: UInt64) -> KVMGuestDebug {
        var d = kvm_guest_debug()
        d.control = UInt32(KVM_GUESTDBG_ENABLE) | UInt32(KVM_GUESTDBG_USE_HW_BP)
        withUnsafeMutableBytes(of: &d.arch.debugreg) { regs in
            for (n, a) in addresses.prefix(4).enumerated() { regs.storeBytes(of: a, toByteOffset: n * 8, as: UInt64.self) }
            regs.storeBytes(of: dr7, toByteOffset: 7 * 8, as: UInt64.self)
        }
        return d
    }
}
