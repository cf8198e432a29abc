import CKVM
import Foundation
import Glibc
import Synchronization

/// Why a freeze did not produce snapshots.
public enum FreezeError: Error, CustomStringConvertible, Equatable {
    /// These vCPUs did not park within the timeout (the machine was thawed again).
    case timeout(notParked: [Int], after: Duration)
    /// The machine is not running (not started, or it stopped / was killed meanwhile).
    case notRunning(String)
    /// `freeze` was called while already frozen.
    case alreadyFrozen

    public var description: String {
        switch self {
        case let .timeout(cpus, after):
            "freeze: vCPU \(cpus.map(String.init).joined(separator: ", ")) did not park within \(after) — the host is overloaded or a device callback is blocking; retry with a longer timeout"
        case let .notRunning(why): "freeze: the machine is not running (\(why))"
        case .alreadyFrozen: "freeze: already frozen — call thaw() first"
        }
    }
}

/// Runs the vCPUs of one VM, one dedicated pthread each (never the Swift cooperative pool),
/// and implements the run loop, the stop-everything-on-shutdown rule, and the freeze
/// rendezvous. The boot engineer's KVMMachine and the tiny-guest machine are built on it.
///
/// Usage: create a `KVMVM` (`KVMSystem.createVM(memory:)`), add an irqchip/PIT if wanted,
/// fill a `DeviceBus`, then `VCPURunner(vm:memory:vcpuCount:...) { vcpu in set regs... }`,
/// `start()`, then `freeze`/`thaw` any number of times, then `wait(timeout:)` or `kill()`.
/// Dropping the runner kills and joins its threads.
public final class VCPURunner: @unchecked Sendable {
    private let core: RunCore

    public var vm: KVMVM { core.vm }
    public var memory: GuestMemory { core.memory }
    /// The vCPUs, index = vCPU id (0 is the BSP). Touch their registers only while frozen
    /// or before `start()`.
    public var vcpus: [KVMVCPU] { core.slots.map(\.vcpu) }
    public var vcpuCount: Int { core.slots.count }

    /// Creates `vcpuCount` vCPUs (ids 0..<n) and calls `setup` on each, in order, on the
    /// calling thread: set CPUID, MSRs, LAPIC, sregs, regs, FPU there.
    public init(vm: KVMVM, memory: GuestMemory, vcpuCount: Int, bus: DeviceBus,
                halt: HaltPolicy, exitPolicy: ExitPolicy = .lenient,
                watchpoints: WatchpointMonitor? = nil, log: Log = .default,
                setup: (KVMVCPU) throws -> Void) throws {
        guard vcpuCount >= 1 else { throw KVMError.invalidConfiguration("a VM needs at least one vCPU") }
        var slots: [VCPUSlot] = []
        for id in 0..<vcpuCount {
            let v = try vm.createVCPU(id: id)
            try setup(v)
            slots.append(VCPUSlot(index: id, vcpu: v))
        }
        core = try RunCore(vm: vm, memory: memory, slots: slots,
                           dispatch: ExitDispatch(bus: bus, policy: exitPolicy, watchpoints: watchpoints, log: log),
                           halt: halt, log: log)
    }

    deinit { core.teardown() }

    /// Starts one thread per vCPU.
    public func start() throws { try core.start() }

    /// Stops every vCPU (completing any in-flight port/MMIO access first), captures their
    /// registers on their own threads, and returns one snapshot per vCPU ordered by id.
    public func freeze(timeout: Duration) throws(FreezeError) -> [VCPURegisterSnapshot] {
        try core.freeze(timeout: timeout)
    }

    /// Lets frozen vCPUs run again (no-op when not frozen).
    public func thaw() { core.thaw() }

    public var isFrozen: Bool { core.freezeRequested.load(ordering: .sequentiallyConsistent) }

    /// Blocks until every vCPU thread has ended, or kills the machine after `timeout`.
    public func wait(timeout: Duration) -> MachineExit { core.wait(timeout: timeout) }

    /// Stops the guest now (any thread, any number of times). A kill while frozen wins.
    public func kill() { core.stop(.killed, detail: "killed") }

    /// Human detail of how the run ended (shutdown reason, fatal diagnostic), once it has.
    public var stopDetail: String? { core.stopDetail }

    /// Arms `set` on every vCPU (KVM_SET_GUEST_DEBUG). Running vCPUs are frozen briefly so
    /// the ioctl happens while they are parked.
    public func setWatchpoints(_ set: WatchpointSet, freezeTimeout: Duration = .seconds(1)) throws {
        try core.withVCPUsParked(timeout: freezeTimeout) {
            for s in core.slots { try s.vcpu.setGuestDebug(set.guestDebug) }
        }
    }
}

/// Per-vCPU state shared between its thread and the coordinator.
final class VCPUSlot: @unchecked Sendable {
    let index: Int
    let vcpu: KVMVCPU
    /// The freeze generation this vCPU has parked for (Release-stored by the vCPU thread
    /// after `snapshot` is written; Acquire-loaded by the coordinator).
    let parkedGeneration = Atomic<UInt64>(0)
    let exited = Atomic<Bool>(false)
    /// Written by the vCPU thread before publishing `parkedGeneration`.
    var snapshot: VCPURegisterSnapshot?

    init(index: Int, vcpu: KVMVCPU) {
        self.index = index
        self.vcpu = vcpu
    }
}

/// The shared state of a run. vCPU threads retain this, not the public `VCPURunner`, so
/// dropping the runner can still stop and join them.
final class RunCore: @unchecked Sendable {
    let vm: KVMVM
    let memory: GuestMemory
    let slots: [VCPUSlot]
    let dispatch: ExitDispatch
    let halt: HaltPolicy
    let log: Log

    let killRequested = Atomic<Bool>(false)
    let freezeRequested = Atomic<Bool>(false)
    let freezeGeneration = Atomic<UInt64>(0)

    /// Guards `exitedCount`, `outcome`, `detail` and the parking waits.
    private let cond = NSCondition()
    private var exitedCount = 0
    private var outcome: MachineExit?
    private var detail: String?
    /// Serialises freeze/thaw/start between coordinators.
    private let control = NSLock()
    /// pthread_t per vCPU while joinable (nil before start and after join). Kicks and joins
    /// take this lock, so a thread is never signalled after it was joined.
    private let threads = Mutex<[pthread_t?]>([])
    private let started = Atomic<Bool>(false)
    /// The vCPU threads write here when they park or end; the freezing thread polls it.
    private let wakeFD: Int32

    init(vm: KVMVM, memory: GuestMemory, slots: [VCPUSlot], dispatch: ExitDispatch, halt: HaltPolicy, log: Log) throws {
        let fd = ckvm_eventfd(0, ckvm_eventfd_flags_cloexec_nonblock())
        guard fd >= 0 else { throw KVMError.ioctl(call: "eventfd", errno: errno) }
        self.wakeFD = fd
        self.vm = vm
        self.memory = memory
        self.slots = slots
        self.dispatch = dispatch
        self.halt = halt
        self.log = log
        threads.withLock { $0 = Array(repeating: nil, count: slots.count) }
    }

    deinit { close(wakeFD) }

    var stopDetail: String? {
        cond.lock(); defer { cond.unlock() }
        return detail
    }

    // MARK: lifecycle

    func start() throws {
        control.lock(); defer { control.unlock() }
        guard !started.load(ordering: .sequentiallyConsistent) else {
            throw KVMError.invalidConfiguration("start() called twice")
        }
        VCPUKick.install()
        started.store(true, ordering: .sequentiallyConsistent)
        for slot in slots {
            var attr = pthread_attr_t()
            pthread_attr_init(&attr)
            pthread_attr_setstacksize(&attr, 1 << 20)
            let box = Unmanaged.passRetained(ThreadStart(core: self, slot: slot)).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, &attr, { raw in
                guard let raw else { return nil }
                let start = Unmanaged<ThreadStart>.fromOpaque(raw).takeRetainedValue()
                start.core.threadMain(start.slot)
                return nil
            }, box)
            pthread_attr_destroy(&attr)
            if rc != 0 {
                Unmanaged<ThreadStart>.fromOpaque(box).release()
                // The vCPUs already started must not run on alone.
                stop(.fatal("could not start vCPU thread \(slot.index)"), detail: "pthread_create: \(KVMError.errnoText(rc))")
                markNeverStarted(from: slot.index)
                throw KVMError.ioctl(call: "pthread_create(vCPU \(slot.index))", errno: rc)
            }
            threads.withLock { $0[slot.index] = tid }
        }
    }

    /// Slots from `index` on never got a thread: count them as ended.
    private func markNeverStarted(from index: Int) {
        cond.lock()
        for s in slots[index...] { s.exited.store(true, ordering: .sequentiallyConsistent); exitedCount += 1 }
        cond.broadcast()
        cond.unlock()
    }

    /// Records how the run ended (first one wins) and stops every vCPU promptly: kill flag,
    /// immediate_exit, signal kick, wake parked threads and the freezing coordinator.
    func stop(_ exit: MachineExit, detail why: String) {
        cond.lock()
        if outcome == nil { outcome = exit; detail = why }
        cond.unlock()
        killRequested.store(true, ordering: .sequentiallyConsistent)
        for s in slots { s.vcpu.setImmediateExit(true) }
        kickAll()
        cond.lock(); cond.broadcast(); cond.unlock()
        signalWake()
    }

    private func kickAll() {
        threads.withLock { tids in
            for case let tid? in tids { pthread_kill(tid, VCPUKick.signal) }
        }
    }

    func wait(timeout: Duration) -> MachineExit {
        guard started.load(ordering: .sequentiallyConsistent) else { return .fatal("wait() before start()") }
        let done = waitForThreads(until: Date().addingTimeInterval(timeout.seconds))
        if !done {
            stop(.timeout, detail: "no shutdown within \(timeout)")
        }
        joinThreads()
        cond.lock(); defer { cond.unlock() }
        return outcome ?? .killed
    }

    private func waitForThreads(until deadline: Date) -> Bool {
        cond.lock(); defer { cond.unlock() }
        while exitedCount < slots.count {
            if !cond.wait(until: deadline) { return exitedCount >= slots.count }
        }
        return true
    }

    /// Joins every thread (after they were told to stop). A thread that does not end within
    /// 10 s (stuck in a device callback) is detached instead so nothing hangs forever.
    private func joinThreads() {
        if !waitForThreads(until: Date().addingTimeInterval(10)) {
            log.error("a vCPU thread did not stop within 10 s after kill; detaching it")
        }
        let tids: [(Int, pthread_t)] = threads.withLock { tids in
            defer { for i in tids.indices { tids[i] = nil } }
            return tids.enumerated().compactMap { i, t in t.map { (i, $0) } }
        }
        for (i, tid) in tids {
            if pthread_equal(tid, pthread_self()) != 0 || !slots[i].exited.load(ordering: .sequentiallyConsistent) {
                pthread_detach(tid)
            } else {
                pthread_join(tid, nil)
            }
        }
    }

    /// Called when the public runner goes away: nothing may keep running.
    func teardown() {
        guard started.load(ordering: .sequentiallyConsistent) else { return }
        let running = threads.withLock { $0.contains { $0 != nil } }
        guard running else { return }
        stop(.killed, detail: "runner released")
        joinThreads()
    }

    // MARK: freeze rendezvous

    func freeze(timeout: Duration) throws(FreezeError) -> [VCPURegisterSnapshot] {
        control.lock(); defer { control.unlock() }
        guard started.load(ordering: .sequentiallyConsistent) else { throw .notRunning("not started") }
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
            var pfd = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(clamping: max(1, Int(left.seconds * 1000))))
        }
        return slots.map { $0.snapshot ?? VCPURegisterSnapshot(cpu: $0.index, rip: 0, rsp: 0, cr3: 0) }
    }

    func thaw() {
        control.lock(); defer { control.unlock() }
        thawLocked()
    }

    private func thawLocked() {
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

    private func stoppedReason() -> String? {
        guard killRequested.load(ordering: .sequentiallyConsistent) else { return nil }
        cond.lock(); defer { cond.unlock() }
        return detail ?? outcome?.description ?? "stopping"
    }

    private func signalWake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    private func drainWake() {
        var v: UInt64 = 0
        _ = Glibc.read(wakeFD, &v, 8)
    }

    // MARK: the vCPU thread

    fileprivate func threadMain(_ slot: VCPUSlot) {
        VCPUKick.unblockOnCurrentThread()
        defer {
            slot.exited.store(true, ordering: .sequentiallyConsistent)
            cond.lock(); exitedCount += 1; cond.broadcast(); cond.unlock()
            signalWake()
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
            let result: KVMVCPU.RunResult
            do {
                result = try vcpu.run()
            } catch {
                stop(.fatal("vCPU \(slot.index): \(error)"), detail: "vCPU \(slot.index): \(error)\(registerSummary(vcpu))")
                return
            }
            pendingCompletion = false
            guard result == .exit else { continue }
            let exit = VCPUExit.decode(vcpu.runPointer)
            let action = dispatch.handle(exit, run: UnsafeMutableRawPointer(vcpu.runPointer),
                                         runSize: vcpu.runMappingSize, cpu: slot.index)
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

    /// Parks this vCPU thread. `halted == false`: until thawed (or killed). `halted == true`:
    /// until the machine stops, answering every freeze meanwhile.
    private func park(_ slot: VCPUSlot, halted: Bool) {
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

    private func capture(_ slot: VCPUSlot, halted: Bool) -> VCPURegisterSnapshot {
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

    /// " [rip=… rsp=… …]" for fatal diagnostics (empty if the registers cannot be read).
    private func registerSummary(_ vcpu: KVMVCPU) -> String {
        guard let r = try? vcpu.getRegs(), let s = try? vcpu.getSregs() else { return "" }
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        return " [rip=\(h(r.rip)) rsp=\(h(r.rsp)) rflags=\(h(r.rflags)) rax=\(h(r.rax)) cs=\(h(UInt64(s.cs.selector))):\(h(s.cs.base)) cr0=\(h(s.cr0)) cr3=\(h(s.cr3)) cr4=\(h(s.cr4)) efer=\(h(s.efer))]"
    }
}

private final class ThreadStart {
    let core: RunCore
    let slot: VCPUSlot
    init(core: RunCore, slot: VCPUSlot) { self.core = core; self.slot = slot }
}

extension Duration {
    /// Seconds as a Double (for Date and poll timeouts).
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}
