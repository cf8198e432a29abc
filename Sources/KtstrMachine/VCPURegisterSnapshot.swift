/// Registers of one vCPU captured while it was frozen. The KVM backend fills it on the vCPU's
/// own thread (KVM_GET_REGS/SREGS); the QEMU backend parses `info registers -a`.
/// Fields a backend could not read stay nil.
public struct VCPURegisterSnapshot: Codable, Sendable, Equatable {
    public var cpu: Int
    public var rip: UInt64
    public var rsp: UInt64
    public var cr3: UInt64
    public var rflags: UInt64?
    public var cr0: UInt64?
    public var cr4: UInt64?
    public var efer: UInt64?
    /// General purpose registers by lower-case name ("rax", "rbx", ...), when available.
    public var gprs: [String: UInt64]?
    /// True when the vCPU was halted (idle) at the time of the freeze, when known.
    public var halted: Bool?

    public init(cpu: Int, rip: UInt64, rsp: UInt64, cr3: UInt64, rflags: UInt64? = nil,
                cr0: UInt64? = nil, cr4: UInt64? = nil, efer: UInt64? = nil,
                gprs: [String: UInt64]? = nil, halted: Bool? = nil) {
        self.cpu = cpu; self.rip = rip; self.rsp = rsp; self.cr3 = cr3; self.rflags = rflags
        self.cr0 = cr0; self.cr4 = cr4; self.efer = efer; self.gprs = gprs; self.halted = halted
    }
}
