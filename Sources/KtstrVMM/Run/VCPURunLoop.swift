import Foundation
import Glibc
import Synchronization
import KtstrMachine

/// The vCPU thread: KVM_RUN, exit dispatch, halt policy, stop-everything on the first
/// shutdown or fatal, parking on freeze.
extension RunCore {
    func threadMain(_ slot: VCPUSlot) {
        Thread.current.name = "ktstr-vcpu\(slot.index)" // sets the pthread name (top, gdb)
        defer {
            slot.exited.store(true, ordering: .sequentiallyConsistent)
            cond.lock(); exitedCount += 1; cond.broadcast(); cond.unlock()
            signalWake()
        }
        do {
            try VCPUKick.unblockOnCurrentThread()
        } catch {
            // Unkickable, this vCPU could never be frozen or stopped: end the run now.
            stop(.fatal("vCPU \(slot.index): \(error)"), detail: "vCPU \(slot.index): \(error)")
            return
        }
        let vcpu = slot.vcpu
        let isBSP = slot.index == 0
        // After a port/MMIO exit the instruction completes only on the next KVM_RUN; a freeze
        // re-enters once with immediate_exit set (KVM finishes the access, returns EINTR)
        // so registers are captured at an instruction boundary.
        var pendingCompletion = false
        while !killRequested.load(ordering: .sequentiallyConsistent) {
            if freezeRequested.load(ordering: .sequentiallyConsistent), !pendingCompletion {
                park(slot, halted: false)
                continue
            }
            let exit: VCPUExit
            do {
                switch try vcpu.run() {
                case let .exit(e):
                    exit = e
                case .interrupted:
                    // EINTR/EAGAIN: a kick, a stray signal, or immediate_exit left set by a
                    // freeze that timed out and thawed before this vCPU parked. Clear
                    // immediate_exit (seq-cst) and re-check the flags at the top: a freeze or
                    // kill whose flag store came first is seen there; a later one sets it again.
                    pendingCompletion = false
                    vcpu.setImmediateExit(false)
                    continue
                }
            } catch {
                stop(.fatal("vCPU \(slot.index): \(error)"), detail: "vCPU \(slot.index): \(error)\(registerSummary(vcpu))")
                return
            }
            pendingCompletion = false
            if case let .internalError(suberror, data) = exit, let assist,
               assist.complete(suberror: suberror, data: data, vcpu: vcpu, log: log) != nil {
                continue
            }
            let action = dispatch.handle(exit, page: vcpu.runPage, cpu: slot.index)
            switch exit {
            case .io, .mmio: pendingCompletion = true
            default: break
            }
            switch action {
            case .resume:
                continue
            case .halted:
                switch halt.action(isBSP: isBSP) {
                case .resume: continue
                case .endRun:
                    stop(.shutdown, detail: "vCPU \(slot.index) halted (end of run)")
                    return
                case .park:
                    park(slot, halted: true)
                    return
                }
            case let .shutdown(why):
                log.info(why)
                stop(.shutdown, detail: why)
                return
            case let .fatal(why):
                let full = why + registerSummary(vcpu)
                log.error(full)
                stop(.fatal(full), detail: full)
                return
            }
        }
    }

    /// " [rip=… rsp=… …]" for fatal diagnostics (empty if the registers cannot be read).
    func registerSummary(_ vcpu: KVMVCPU) -> String {
        guard let r = try? vcpu.getRegs(), let s = try? vcpu.getSregs() else { return "" }
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        return " [rip=\(h(r.rip)) rsp=\(h(r.rsp)) rflags=\(h(r.rflags)) rax=\(h(r.rax)) cs=\(h(UInt64(s.cs.selector))):\(h(s.cs.base)) cr0=\(h(s.cr0)) cr3=\(h(s.cr3)) cr4=\(h(s.cr4)) efer=\(h(s.efer))]"
    }
}
