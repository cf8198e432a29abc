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
    private(set) var messages: [AgentMessage] = []
    private(set) var helloAt: ContinuousClock.Instant?
    let consoleLimit: Int
    let created = ContinuousClock.now
    let onHello: @Sendable ([String: UInt64]) -> Void
    let log: Log

    init(consoleLimit: Int = 64 * 1024, log: Log, onHello: @escaping @Sendable ([String: UInt64]) -> Void) {
        self.consoleLimit = consoleLimit; self.onHello = onHello; self.log = log
    }

    func consoleBytes(_ b: ArraySlice<UInt8>) {
        lock.lock(); defer { lock.unlock() }
        console += b
        if console.count > 2 * consoleLimit { console.removeFirst(console.count - consoleLimit) }
    }

    func channelBytes(_ b: ArraySlice<UInt8>) {
        var hello: [String: UInt64]?
        lock.lock()
        for line in splitter.feed(b) {
            guard let m = AgentMessage.parse(Substring(line)) else { continue }
            log.debug("agent (+\(SchedulerRun.millis(ContinuousClock.now - created)) ms): \(line.count > 400 ? line.prefix(200) + " … " + line.suffix(150) : Substring(line))")
            if case let .hello(_, _, syms, _) = m, helloAt == nil {
                helloAt = .now
                hello = syms
            }
            if messages.count < 10_000 { messages.append(m) }
        }
        lock.unlock()
        if let hello { onHello(hello) }
    }

    var consoleTail: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: console.suffix(consoleLimit), as: UTF8.self)
    }

    var snapshot: (messages: [AgentMessage], helloAt: ContinuousClock.Instant?) {
        lock.lock(); defer { lock.unlock() }
        return (messages, helloAt)
    }
}
