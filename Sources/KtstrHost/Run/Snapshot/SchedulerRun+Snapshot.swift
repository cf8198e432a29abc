import Foundation
import KtstrMachine

extension SchedulerRun {
    /// The snapshot a run restores (nil: boot cold) and what the outcome says about it. A
    /// snapshot that cannot be built is a `snapshotFallback`, never an error of the run.
    static func prepareSnapshot(_ config: SnapshotCache.Configuration?, log: Log) async
        -> (boot: BootSnapshot?, use: SnapshotUse?) {
        guard let config else { return (nil, nil) }
        do {
            let s = try await Blocking.run { try SnapshotCache.prepare(config, log: log) }
            return (s, SnapshotUse(key: s.key, restored: false, built: s.built))
        } catch {
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
