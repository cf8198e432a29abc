import KtstrMachine

/// What a vCPU does when KVM returns KVM_EXIT_HLT (only without an in-kernel irqchip; with
/// one, KVM halts the vCPU itself until an interrupt arrives and never exits for HLT).
public enum HaltAction: Sendable, Equatable {
    /// The run is over: stop every vCPU and report `.shutdown` (tiny guests: "done").
    case endRun
    /// Nothing can wake this vCPU: park it until the machine stops. It still answers
    /// freezes (its snapshot says `halted`).
    case park
    /// Re-enter KVM_RUN at once (continues after the HLT).
    case resume
}

public struct HaltPolicy: Sendable, Equatable {
    public var bsp: HaltAction
    public var ap: HaltAction

    public init(bsp: HaltAction, ap: HaltAction) { self.bsp = bsp; self.ap = ap }

    /// Tiny guests: the BSP halting means the payload finished; APs halt for good.
    public static let tinyGuest = HaltPolicy(bsp: .endRun, ap: .park)
    /// With an in-kernel irqchip HLT never reaches userspace; if it does, keep going.
    public static let irqchip = HaltPolicy(bsp: .resume, ap: .resume)

    public func action(isBSP: Bool) -> HaltAction { isBSP ? bsp : ap }
}
