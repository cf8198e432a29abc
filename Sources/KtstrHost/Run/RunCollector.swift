import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Gathers what one run's guest says: the console tail and the agent's messages. Fed from
/// qemu's reader threads, read once the machine is gone. Bounded: the guest is hostile.
final class RunCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var console: [UInt8] = []
    private var splitter = LineSplitter(maxLine: AgentMessage.maxLineBytes)
    /// Console lines for `KTSTR_LOG=debug` (a slow boot, e.g. KVMMachine on nested PVM, can be
    /// followed as it happens).
    private var consoleLines = LineSplitter(maxLine: 1024)
    private(set) var messages: [AgentMessage] = []
    private(set) var helloAt: ContinuousClock.Instant?
    private(set) var schedEnabledAt: ContinuousClock.Instant?
    /// Set at the agent's `done` or `sched_exit`: nothing live can start after it.
    private(set) var finishedAt: ContinuousClock.Instant?
    /// A restored agent's `restored` message: when, and the random bytes it drew.
    private(set) var restored: (at: ContinuousClock.Instant, random: String)?
    let consoleLimit: Int
    let created = ContinuousClock.now
    let onHello: @Sendable ([String: UInt64]) -> Void
    /// Every parsed agent message, as it arrives (the live sampler's markers); outside the lock.
    let onMessage: (@Sendable (AgentMessage) -> Void)?
    let log: Log

    init(consoleLimit: Int = 64 * 1024, log: Log, onMessage: (@Sendable (AgentMessage) -> Void)? = nil,
         onHello: @escaping @Sendable ([String: UInt64]) -> Void) {
        self.consoleLimit = consoleLimit; self.onHello = onHello; self.onMessage = onMessage; self.log = log
    }

    func consoleBytes(_ b: ArraySlice<UInt8>) {
        lock.lock(); defer { lock.unlock() }
        console += b
        if console.count > 2 * consoleLimit { console.removeFirst(console.count - consoleLimit) }
        if log.level == .debug {
            for line in consoleLines.feed(b) { log.debug("console: \(line)") }
        }
    }

    func channelBytes(_ b: ArraySlice<UInt8>) {
        var hello: [String: UInt64]?
        var arrived: [AgentMessage] = []
        lock.lock()
        for line in splitter.feed(b) {
            guard let m = AgentMessage.parse(Substring(line)) else { continue }
            log.debug("agent (+\(SchedulerRun.millis(ContinuousClock.now - created)) ms): \(line.count > 400 ? line.prefix(200) + " … " + line.suffix(150) : Substring(line))")
            if case let .hello(_, _, syms, _) = m, helloAt == nil {
                helloAt = .now
                hello = syms
            }
            if case .schedulerEnabled = m, schedEnabledAt == nil { schedEnabledAt = .now }
            if case let .restored(random) = m, restored == nil { restored = (.now, random) }
            switch m {
            case .done, .schedulerExit: if finishedAt == nil { finishedAt = .now }
            default: break
            }
            if messages.count < 10_000 { messages.append(m) }
            if onMessage != nil { arrived.append(m) }
        }
        lock.unlock()
        if let hello { onHello(hello) }
        for m in arrived { onMessage?(m) }
    }

    /// Forgets everything: a failed restore's bytes must not leak into the cold boot after it.
    func reset() {
        lock.lock(); defer { lock.unlock() }
        console = []
        splitter = LineSplitter(maxLine: AgentMessage.maxLineBytes)
        messages = []
        helloAt = nil; schedEnabledAt = nil; finishedAt = nil; restored = nil
    }

    var restoredState: (at: ContinuousClock.Instant, random: String)? {
        lock.lock(); defer { lock.unlock() }
        return restored
    }

    var consoleTail: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: console.suffix(consoleLimit), as: UTF8.self)
    }

    /// When the agent reported the scheduler enabled, and whether the run is already over.
    var liveState: (enabledAt: ContinuousClock.Instant?, finished: Bool) {
        lock.lock(); defer { lock.unlock() }
        return (schedEnabledAt, finishedAt != nil)
    }

    var snapshot: (messages: [AgentMessage], helloAt: ContinuousClock.Instant?) {
        lock.lock(); defer { lock.unlock() }
        return (messages, helloAt)
    }
}
