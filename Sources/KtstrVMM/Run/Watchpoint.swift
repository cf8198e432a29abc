import CVolatile
import Synchronization
import KtstrMachine

/// Up to four 4-byte write watchpoints in DR0..DR3, as KVM_SET_GUEST_DEBUG wants them.
/// Slot 0 is the sched_ext exit_kind watch; slots 1...3 are for users.
public struct WatchpointSet: Sendable, Equatable {
    public static let slotCount = 4
    /// Guest virtual addresses per slot (nil = slot off).
    public private(set) var addresses: [UInt64?] = [nil, nil, nil, nil]

    public enum ArmError: Error, CustomStringConvertible, Equatable {
        case badSlot(Int)
        case misaligned(UInt64)
        public var description: String {
            switch self {
            case let .badSlot(s): "watchpoint slot \(s) does not exist — use 0...3"
            case let .misaligned(a): "watchpoint address 0x\(String(a, radix: 16)) is not 4-byte aligned — x86 debug registers need a 4-aligned address for a 4-byte watch"
            }
        }
    }

    public init() {}

    /// Watches 4-byte writes to guest virtual `address` in `slot`.
    public mutating func arm(slot: Int, guestVirtual address: UInt64) throws(ArmError) {
        guard (0..<Self.slotCount).contains(slot) else { throw .badSlot(slot) }
        guard address % 4 == 0 else { throw .misaligned(address) }
        addresses[slot] = address
    }

    public mutating func disarm(slot: Int) {
        guard (0..<Self.slotCount).contains(slot) else { return }
        addresses[slot] = nil
    }

    public var isEmpty: Bool { addresses.allSatisfy { $0 == nil } }

    /// DR7 for the armed slots: local enable L<n> (bit 2n), R/W<n> = 01 (data writes) at bits
    /// 16+4n, LEN<n> = 11 (4 bytes) at bits 18+4n, plus LE (bit 8, exact data breakpoints).
    public var dr7: UInt64 {
        var v: UInt64 = 0
        for (n, a) in addresses.enumerated() where a != nil {
            v |= 1 << (2 * UInt64(n))
            v |= 0b01 << (16 + 4 * UInt64(n))
            v |= 0b11 << (18 + 4 * UInt64(n))
        }
        if v != 0 { v |= 1 << 8 }
        return v
    }

    /// The KVM_SET_GUEST_DEBUG argument: ENABLE|USE_HW_BP with DR0..3 and DR7, or all clear.
    public var guestDebug: KVMGuestDebug {
        guard !isEmpty else { return .disabled }
        return .hardwareBreakpoints(addresses.map { $0 ?? 0 }, dr7: dr7)
    }

    /// Slots whose B<n> bit (DR6 bits 0...3) is set.
    public static func hitSlots(dr6: UInt64) -> [Int] {
        (0..<slotCount).filter { dr6 & (1 << UInt64($0)) != 0 }
    }
}

/// Reacts to KVM_EXIT_DEBUG for the armed `WatchpointSet` (called on vCPU threads).
///
/// Slot 0 watches the scheduler's `exit_kind`: a hit latches the failure trigger only when
/// the value now stored there (read through `exitKindHost`, volatile) is at or above the
/// caller's threshold (the monitor passes SCX_EXIT_ERROR). A clean exit (DONE, UNREG...)
/// writes the same word and must not trigger. Hits on slots 1...3 are counted for the user.
public final class WatchpointMonitor: Sendable {
    private struct Target: Sendable {
        var exitKindHost: UnsafeRawPointerBox?
        /// Values at or above this in the slot-0 word latch the failure trigger.
        var threshold: UInt32
        var onTrigger: (@Sendable (UInt32) -> Void)?
    }
    private let target: Mutex<Target>
    private let trigger = Mutex<(fired: Bool, value: UInt32, cpu: Int, pc: UInt64)>((false, 0, -1, 0))
    private let hits = Mutex<[Int]>([0, 0, 0, 0])

    /// `exitKindHost`: host address of the 4-byte word slot 0 watches (resolved by the
    /// caller through the guest page tables); must stay mapped while the VM runs. It is
    /// usually unknown when the VM is built: pass nil and call `watchExitKind` later.
    /// `onTrigger` runs on the vCPU thread that hit the watchpoint, once: keep it short and
    /// do not freeze from it (that vCPU could never park) — signal another thread instead.
    public init(exitKindHost: UnsafeRawPointer? = nil, threshold: UInt32 = .max,
                onTrigger: (@Sendable (UInt32) -> Void)? = nil) {
        self.target = Mutex(Target(exitKindHost: exitKindHost.map(UnsafeRawPointerBox.init), threshold: threshold,
                                   onTrigger: onTrigger))
    }

    /// Points slot 0's gate at `host` (the exit_kind word) and sets the trigger callback.
    public func watchExitKind(host: UnsafeRawPointer?, threshold: UInt32, onTrigger: (@Sendable (UInt32) -> Void)?) {
        target.withLock {
            $0 = Target(exitKindHost: host.map(UnsafeRawPointerBox.init), threshold: threshold, onTrigger: onTrigger)
        }
    }

    /// True once slot 0 saw an error-class value; `value` is that value.
    public var failureTrigger: (fired: Bool, value: UInt32, cpu: Int, pc: UInt64) { trigger.withLock { $0 } }

    /// Hit counts of slots 0...3.
    public var hitCounts: [Int] { hits.withLock { $0 } }

    /// Handles one debug exit; false when no watchpoint bit is set in DR6 (not ours).
    public func handle(_ exit: VCPUExit.Debug, cpu: Int) -> Bool {
        let slots = WatchpointSet.hitSlots(dr6: exit.dr6)
        guard !slots.isEmpty else { return false }
        hits.withLock { h in for s in slots { h[s] += 1 } }
        let t = target.withLock { $0 }
        if slots.contains(0), let p = t.exitKindHost?.pointer {
            let value = ktstr_load_volatile_u32(p)
            if value >= t.threshold {
                let first = trigger.withLock { t in
                    guard !t.fired else { return false }
                    t = (true, value, cpu, exit.pc)
                    return true
                }
                if first { t.onTrigger?(value) }
            }
        }
        return true
    }
}

/// A raw pointer the caller promises stays valid (guest RAM outlives the VM's vCPUs).
struct UnsafeRawPointerBox: @unchecked Sendable {
    let pointer: UnsafeRawPointer
}
