import Foundation
import Glibc
import Synchronization
import KtstrMachine

/// The shared state of a run. vCPU threads retain this, not the public `VCPURunner`, so
/// dropping the runner can still stop and join them.
final class RunCore: @unchecked Sendable {
    let vm: KVMVM
    let memory: GuestMemory
    let slots: [VCPUSlot]
    let dispatch: ExitDispatch
    let halt: HaltPolicy
    /// Completes instructions KVM's emulator cannot (PVM-safe policy only), else nil.
    let assist: EmulationAssist?
    let log: Log

    let killRequested = Atomic<Bool>(false)
    let freezeRequested = Atomic<Bool>(false)
    let freezeGeneration = Atomic<UInt64>(0)

    /// Guards `exitedCount`, `outcome`, `detail` and the parking waits.
    let cond = NSCondition()
    var exitedCount = 0
    var outcome: MachineExit?
    var detail: String?
    /// Serialises freeze/thaw/start between coordinators.
    let control = NSLock()
    /// pthread_t per vCPU while joinable (nil before start and after join). Kicks and joins
    /// take this lock, so a thread is never signalled after it was joined.
    let threads = Mutex<[pthread_t?]>([])
    let started = Atomic<Bool>(false)
    /// The vCPU threads write here when they park or end; the freezing thread polls it.
    let wake: EventFD

    init(vm: KVMVM, memory: GuestMemory, slots: [VCPUSlot], dispatch: ExitDispatch, halt: HaltPolicy,
         assist: EmulationAssist? = nil, log: Log) throws {
        self.wake = try EventFD(nonBlocking: true)
        self.vm = vm
        self.memory = memory
        self.slots = slots
        self.dispatch = dispatch
        self.halt = halt
        self.assist = assist
        self.log = log
        threads.withLock { $0 = Array(repeating: nil, count: slots.count) }
    }

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
        // Without the no-op handler a kick would terminate the process (the default action
        // of a real-time signal).
        try VCPUKick.install()
        started.store(true, ordering: .sequentiallyConsistent)
        for slot in slots {
            var attr = pthread_attr_t()
            pthread_attr_init(&attr)
            pthread_attr_setstacksize(&attr, 4 << 20) // device callbacks run here
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
                // pthread_create returns the error instead of setting errno.
                let error = SystemCallError(call: "pthread_create(vCPU \(slot.index))", errno: rc)
                stop(.fatal("could not start vCPU thread \(slot.index)"), detail: error.description)
                markNeverStarted(from: slot.index)
                throw error
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

    func kickAll() {
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

    /// vCPU threads post here when they park or end; the freezing thread polls it.
    func signalWake() { wake.signal() }

    func drainWake() { _ = wake.read() }

    /// Called when the public runner goes away: nothing may keep running.
    func teardown() {
        guard started.load(ordering: .sequentiallyConsistent) else { return }
        let running = threads.withLock { $0.contains { $0 != nil } }
        guard running else { return }
        stop(.killed, detail: "runner released")
        joinThreads()
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
