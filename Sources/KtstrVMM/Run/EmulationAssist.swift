import Foundation
import Synchronization
import KtstrMachine

/// Instructions KVM's instruction emulator gives up on (KVM_EXIT_INTERNAL_ERROR, suberror
/// EMULATION) that the VMM completes itself. Only for hosts that run the guest kernel through
/// that emulator (nested PVM without vmx/svm: the PVM-safe policy); with hardware
/// virtualisation the CPU executes these instructions and this never runs.
///
/// Why it is needed: the emulator implements software interrupts only in real mode, so a
/// 64-bit `int3` (0xCC) ends the run. Linux executes one on every boot (`int3_selftest`
/// during alternatives patching) and uses int3 for live text patching.
public final class EmulationAssist: Sendable {
    /// What to do with one failed instruction.
    public enum Action: Sendable, Equatable {
        /// Advance RIP by `length` bytes, then deliver exception `vector` as a trap (the
        /// pushed RIP is the next instruction's, as the CPU does for INT3).
        case trap(vector: UInt8, length: UInt64, name: String)
    }

    private let counts = Mutex<[String: Int]>([:])

    public init() {}

    /// The action for the instruction starting with `bytes`, or nil when the VMM cannot
    /// complete it (the run then ends with the emulator's error, as before).
    public static func plan(bytes: [UInt8]) -> Action? {
        guard let first = bytes.first else { return nil }
        switch first {
        case 0xcc: return .trap(vector: 3, length: 1, name: "int3")
        default: return nil
        }
    }

    /// How often each instruction was completed here so far.
    public var completed: [String: Int] { counts.withLock { $0 } }

    /// Completes the instruction of an emulation-failure exit on `vcpu` (its own thread).
    /// Returns what it did, nil when this exit is not one it handles.
    func complete(suberror: UInt32, data: [UInt64], vcpu: KVMVCPU, log: Log) -> String? {
        guard let bytes = VCPUExit.emulationFailureBytes(suberror: suberror, data: data),
              let action = Self.plan(bytes: bytes) else { return nil }
        switch action {
        case let .trap(vector, length, name):
            do {
                var regs = try vcpu.getRegs()
                let at = regs.rip
                regs.rip = at &+ length
                try vcpu.setRegs(regs)
                var events = try vcpu.getVCPUEvents()
                events.exception.injected = 1
                events.exception.nr = vector
                events.exception.has_error_code = 0
                events.exception.error_code = 0
                events.flags = 0 // leave NMI, SIPI and SMI state as they are
                try vcpu.setVCPUEvents(events)
                let n = counts.withLock { c -> Int in c[name, default: 0] += 1; return c[name]! }
                let what = "\(name) at 0x\(String(at, radix: 16)) on vCPU \(vcpu.id): vector \(vector) injected (KVM's emulator cannot run it)"
                if n == 1 { log.info("emulation assist: \(what)") } else { log.debug("emulation assist #\(n): \(what)") }
                return what
            } catch {
                log.error("emulation assist: \(name) on vCPU \(vcpu.id) could not be completed: \(error)")
                return nil
            }
        }
    }
}
