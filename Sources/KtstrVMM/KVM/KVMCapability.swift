import CKVM
import KtstrMachine

/// A `KVM_CAP_*` value with its name, for `KVMSystem.check` / `KVMVM.check` and for errors.
public struct KVMCapability: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public let name: String

    public init(_ rawValue: Int32, _ name: String) { self.rawValue = rawValue; self.name = name }
    public var description: String { name }

    public static let irqchip = KVMCapability(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP")
    public static let hlt = KVMCapability(KVM_CAP_HLT, "KVM_CAP_HLT")
    public static let userMemory = KVMCapability(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY")
    public static let setTSSAddr = KVMCapability(KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR")
    public static let setIdentityMapAddr = KVMCapability(KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR")
    public static let extCPUID = KVMCapability(KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID")
    public static let mpState = KVMCapability(KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE")
    public static let pit2 = KVMCapability(KVM_CAP_PIT2, "KVM_CAP_PIT2")
    public static let pitState2 = KVMCapability(KVM_CAP_PIT_STATE2, "KVM_CAP_PIT_STATE2")
    public static let setGuestDebug = KVMCapability(KVM_CAP_SET_GUEST_DEBUG, "KVM_CAP_SET_GUEST_DEBUG")
    public static let vcpuEvents = KVMCapability(KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS")
    public static let debugRegs = KVMCapability(KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS")
    public static let xsave = KVMCapability(KVM_CAP_XSAVE, "KVM_CAP_XSAVE")
    public static let xcrs = KVMCapability(KVM_CAP_XCRS, "KVM_CAP_XCRS")
    public static let tscControl = KVMCapability(KVM_CAP_TSC_CONTROL, "KVM_CAP_TSC_CONTROL")
    public static let getTSCKHz = KVMCapability(KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ")
    public static let irqfd = KVMCapability(KVM_CAP_IRQFD, "KVM_CAP_IRQFD")
    public static let ioeventfd = KVMCapability(KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD")
    public static let irqRouting = KVMCapability(KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING")
    public static let signalMSI = KVMCapability(KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI")
    public static let readonlyMem = KVMCapability(KVM_CAP_READONLY_MEM, "KVM_CAP_READONLY_MEM")
    public static let immediateExit = KVMCapability(KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")
    public static let splitIrqchip = KVMCapability(KVM_CAP_SPLIT_IRQCHIP, "KVM_CAP_SPLIT_IRQCHIP")
    public static let x2apicAPI = KVMCapability(KVM_CAP_X2APIC_API, "KVM_CAP_X2APIC_API")
    public static let internalErrorData = KVMCapability(KVM_CAP_INTERNAL_ERROR_DATA, "KVM_CAP_INTERNAL_ERROR_DATA")
    public static let nrVCPUs = KVMCapability(KVM_CAP_NR_VCPUS, "KVM_CAP_NR_VCPUS")
    public static let maxVCPUs = KVMCapability(KVM_CAP_MAX_VCPUS, "KVM_CAP_MAX_VCPUS")
    public static let maxVCPUID = KVMCapability(KVM_CAP_MAX_VCPU_ID, "KVM_CAP_MAX_VCPU_ID")
    public static let nrMemslots = KVMCapability(KVM_CAP_NR_MEMSLOTS, "KVM_CAP_NR_MEMSLOTS")
    public static let adjustClock = KVMCapability(KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK")
    public static let x86DisableExits = KVMCapability(KVM_CAP_X86_DISABLE_EXITS, "KVM_CAP_X86_DISABLE_EXITS")

    /// Every capability named here (for `ktstr doctor`-style reports).
    public static let all: [KVMCapability] = [
        .irqchip, .hlt, .userMemory, .setTSSAddr, .setIdentityMapAddr, .extCPUID, .mpState, .pit2,
        .pitState2, .setGuestDebug, .vcpuEvents, .debugRegs, .xsave, .xcrs, .tscControl, .getTSCKHz,
        .irqfd, .ioeventfd, .irqRouting, .signalMSI, .readonlyMem, .immediateExit, .splitIrqchip,
        .x2apicAPI, .internalErrorData, .nrVCPUs, .maxVCPUs, .maxVCPUID, .nrMemslots, .adjustClock,
        .x86DisableExits,
    ]

    /// What the VMM core needs on every host (checked by `KVMSystem.requireBasics()`).
    public static let required: [KVMCapability] = [.userMemory, .immediateExit]
}
