import Foundation
import KtstrMachine

extension SchedulerRun {
    /// The snapshot a run restores (nil: boot cold) and what the outcome says about it. A
    /// snapshot that cannot be built is a `snapshotFallback`, never an error of the run.
    /// Cancelled meanwhile (the build's VM is killed): nil, and the run goes on to its own
    /// cancellation like a run cancelled at its start.
    static func prepareSnapshot(_ config: SnapshotCache.Configuration?, log: Log) async
        -> (boot: BootSnapshot?, use: SnapshotUse?) {
        guard let config else { return (nil, nil) }
        let cancel = BuildCancellation()
        do {
            let s = try await withTaskCancellationHandler {
                try await Blocking.run { try SnapshotCache.prepare(config, cancel: cancel, log: log) }
            } onCancel: {
                cancel.cancel()
            }
            return (s, SnapshotUse(key: s.key, restored: false, built: s.built))
        } catch {
            if cancel.isCancelled { return (nil, nil) }
            log.warning("booting cold: \(error)")
            return (nil, SnapshotUse(key: nil, restored: false, built: false,
                                     problem: RunProblem(.snapshotFallback, "\(error)")))
        }
    }
}

/// `RunOutcome.snapshot` as the run goes (set from the VM thread).
final class SnapshotUseBox: @unchecked Sendable {
    private let lock = NSLock()
    private var use: SnapshotUse?

    init(_ use: SnapshotUse?) { self.use = use }

    var value: SnapshotUse? { lock.lock(); defer { lock.unlock() }; return use }

    func restored(at: (at: ContinuousClock.Instant, random: String)?, started: ContinuousClock.Instant) {
        lock.lock(); defer { lock.unlock() }
        use?.restored = true
        use?.restoreMillis = at.map { SchedulerRun.millis($0.at - started) }
        use?.guestRandom = at?.random
    }

    func fellBack(_ why: String) {
        lock.lock(); defer { lock.unlock() }
        use?.restored = false
        use?.problem = RunProblem(.snapshotFallback, why)
    }
}
