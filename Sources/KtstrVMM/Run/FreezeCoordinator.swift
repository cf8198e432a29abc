import Foundation
import Glibc
import Synchronization
import KtstrMachine

/// Why a freeze did not produce snapshots.
public enum FreezeError: Error, CustomStringConvertible, Equatable {
    /// These vCPUs did not park within the timeout (the machine was thawed again).
    case timeout(notParked: [Int], after: Duration)
    /// The machine is not running (not started, or it stopped / was killed meanwhile).
    case notRunning(String)
    /// `freeze` was called while already frozen.
    case alreadyFrozen
    /// `freeze` was called on a vCPU thread (a device or watchpoint callback): that vCPU
    /// could never park. Hand the work to another thread.
    case calledFromVCPUThread(Int)
    /// These vCPUs parked without a register snapshot (reading their registers failed): no
    /// made-up zeros are returned (the machine was thawed again).
    case missingSnapshot([Int])

    public var description: String {
        switch self {
        case let .timeout(cpus, after):
            "freeze: vCPU \(cpus.map(String.init).joined(separator: ", ")) did not park within \(after) — the host is overloaded or a device callback is blocking; retry with a longer timeout"
        case let .notRunning(why): "freeze: the machine is not running (\(why))"
        case .alreadyFrozen: "freeze: already frozen — call thaw() first"
        case let .missingSnapshot(cpus): "freeze: vCPU \(cpus.map(String.init).joined(separator: ", ")) parked without a register snapshot (register read failed) — see the log"
        case let .calledFromVCPUThread(cpu): "freeze: called on vCPU \(cpu)'s own thread (from a device or watchpoint callback), which could never park — call it from another thread"
        }
    }
}

/// The freeze rendezvous: the coordinator side (`freeze`, `thaw`) and the vCPU side
/// (`park`, `capture`). Protocol: set `freezeRequested`, then every vCPU's immediate_exit,
/// then kick with the signal; each vCPU completes any in-flight access (one more KVM_RUN
/// with immediate_exit set), captures its registers on its own thread, Release-stores the
/// freeze generation it parked for and wakes the coordinator through the eventfd; the
/// coordinator waits, bounded, until every vCPU published the current generation.
extension RunCore {
    func freeze(timeout: Duration) throws(FreezeError) -> [VCPURegisterSnapshot] {
        control.lock(); defer { control.unlock() }
        guard started.load(ordering: .sequentiallyConsistent) else { throw .notRunning("not started") }
        if let cpu = vcpuIndexOfCurrentThread() { throw .calledFromVCPUThread(cpu) }
        if let why = stoppedReason() { throw .notRunning(why) }
        guard !freezeRequested.load(ordering: .sequentiallyConsistent) else { throw .alreadyFrozen }

        let gen = freezeGeneration.add(1, ordering: .sequentiallyConsistent).newValue
        freezeRequested.store(true, ordering: .sequentiallyConsistent)
        // immediate_exit before the kick: a kick that lands before KVM_RUN is entered is
        // lost, but KVM checks immediate_exit on entry.
        for s in slots { s.vcpu.setImmediateExit(true) }
        kickAll()
        cond.lock(); cond.broadcast(); cond.unlock() // vCPUs parked on HLT publish too

        let deadline = ContinuousClock.now + timeout
        while true {
            drainWake()
            if let why = stoppedReason() {
                thawLocked()
                throw .notRunning(why)
            }
            let waiting = slots.filter { $0.parkedGeneration.load(ordering: .acquiring) != gen }
            if waiting.isEmpty { break }
            let left = deadline - ContinuousClock.now
            if left <= .zero {
                thawLocked()
                throw .timeout(notParked: waiting.map(\.index), after: timeout)
            }
            var pfd = pollfd(fd: wake.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(clamping: max(1, Int(left.seconds * 1000))))
        }
        let missing = slots.filter { $0.snapshot == nil }.map(\.index)
        guard missing.isEmpty else {
            thawLocked()
            throw .missingSnapshot(missing)
        }
        return slots.compactMap(\.snapshot)
    }

    func vcpuIndexOfCurrentThread() -> Int? {
        let me = pthread_self()
        return threads.withLock { tids in tids.firstIndex { $0.map { pthread_equal($0, me) != 0 } ?? false } }
    }

    func thaw() {
        control.lock(); defer { control.unlock() }
        thawLocked()
    }

    func thawLocked() {
        cond.lock()
        freezeRequested.store(false, ordering: .sequentiallyConsistent)
        cond.broadcast()
        cond.unlock()
    }

    /// Runs `body` while every vCPU is parked (or before start / after the end).
    func withVCPUsParked(timeout: Duration, _ body: () throws -> Void) throws {
        guard started.load(ordering: .sequentiallyConsistent), stoppedReason() == nil else { return try body() }
        let wasFrozen = freezeRequested.load(ordering: .sequentiallyConsistent)
        if !wasFrozen { _ = try freeze(timeout: timeout) }
        defer { if !wasFrozen { thaw() } }
        try body()
    }

    func stoppedReason() -> String? {
        guard killRequested.load(ordering: .sequentiallyConsistent) else { return nil }
        cond.lock(); defer { cond.unlock() }
        return detail ?? outcome?.description ?? "stopping"
    }

    // MARK: vCPU side

    /// Parks this vCPU thread. `halted == false`: until thawed (or killed). `halted == true`:
    /// until the machine stops, answering every freeze meanwhile.
    func park(_ slot: VCPUSlot, halted: Bool) {
        // Registers cannot change while parked: capture once, publish for each generation.
        slot.snapshot = capture(slot, halted: halted)
        cond.lock()
        while !killRequested.load(ordering: .sequentiallyConsistent) {
            let frozen = freezeRequested.load(ordering: .sequentiallyConsistent)
            if !frozen && !halted { break }
            if frozen {
                let gen = freezeGeneration.load(ordering: .sequentiallyConsistent)
                if slot.parkedGeneration.load(ordering: .relaxed) != gen {
                    slot.parkedGeneration.store(gen, ordering: .releasing)
                    signalWake()
                }
            }
            cond.wait()
        }
        cond.unlock()
        // Clear immediate_exit before re-checking the flags (seq-cst): a freeze or kill that
        // raced in after this store also set immediate_exit after it, so it is not lost.
        if !halted { slot.vcpu.setImmediateExit(false) }
    }

    func capture(_ slot: VCPUSlot, halted: Bool) -> VCPURegisterSnapshot {
        do {
            let r = try slot.vcpu.getRegs()
            let s = try slot.vcpu.getSregs()
            let gprs: [String: UInt64] = [
                "rax": r.rax, "rbx": r.rbx, "rcx": r.rcx, "rdx": r.rdx, "rsi": r.rsi, "rdi": r.rdi,
                "rbp": r.rbp, "rsp": r.rsp, "r8": r.r8, "r9": r.r9, "r10": r.r10, "r11": r.r11,
                "r12": r.r12, "r13": r.r13, "r14": r.r14, "r15": r.r15,
            ]
            return VCPURegisterSnapshot(cpu: slot.index, rip: r.rip, rsp: r.rsp, cr3: s.cr3, rflags: r.rflags,
                                        cr0: s.cr0, cr4: s.cr4, efer: s.efer, gprs: gprs, halted: halted)
        } catch {
            log.warning("vCPU \(slot.index): register capture failed: \(error)")
            return VCPURegisterSnapshot(cpu: slot.index, rip: 0, rsp: 0, cr3: 0, halted: halted)
        }
    }
}
