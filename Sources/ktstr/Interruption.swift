import Dispatch
import Foundation
import Glibc
import Synchronization

/// Ctrl-C and SIGTERM for commands that run a VM: the signal cancels the work (which kills
/// the VM and reaps qemu) instead of killing the process with the VM still running; the
/// command then says what was interrupted and exits 128 + the signal (130, 143).
enum Interruption {
    /// Runs `work` with SIGINT and SIGTERM turned into task cancellation. Returns the work's
    /// result and the signal that arrived, if any.
    static func run<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) async throws -> (value: T, signal: Int32?) {
        let received = Mutex<Int32?>(nil)
        let task = Task { try await work() }
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN) // delivered to the dispatch source instead
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                let first = received.withLock { r -> Bool in
                    defer { if r == nil { r = sig } }
                    return r == nil
                }
                if first { task.cancel() } else { exit(128 + sig) } // a second signal: leave now
            }
            s.resume()
            sources.append(s)
        }
        defer {
            sources.forEach { $0.cancel() }
            for sig in [SIGINT, SIGTERM] { signal(sig, SIG_DFL) }
        }
        do {
            let v = try await task.value
            return (v, received.withLock { $0 })
        } catch {
            if let sig = received.withLock({ $0 }) { throw Interrupted(signal: sig) }
            throw error
        }
    }

    /// The work was cancelled by a signal before it had anything to report.
    struct Interrupted: Error {
        let signal: Int32
        var name: String { signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)" }
        var status: Int32 { 128 + signal }
    }
}
