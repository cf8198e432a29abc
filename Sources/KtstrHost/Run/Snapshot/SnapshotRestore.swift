import Foundation
import Glibc
import KtstrMachine
import KtstrQEMU
import KtstrProtocol

/// One run's restore (docs/DESIGN-NOTES.md "Boot snapshots"): a fresh qemu loads the
/// snapshot, the host sends the plan request (entropy, clock, the run's files) over the plan
/// port, and the restore counts once the agent says `restored`. Anything short of that is a
/// failure the caller answers with a cold boot.
enum SnapshotRestore {
    /// From qemu's start to the agent's `restored`: the RAM copy, the state load, the request
    /// and its unpacking (well under a second here; generous for a loaded host).
    static let timeout = Duration.seconds(60)
    static let entropyBytes = 64

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Restores a new machine from `snapshot` with `config`'s sinks, topology and memory;
    /// `created` sees it before it starts (the caller's kill on cancellation); `cancelled`
    /// also ends the wait (a kill that came before qemu existed could not reach it). On a
    /// throw the machine is gone.
    static func start(_ snapshot: BootSnapshot, config: QEMUMachine.Configuration, archive: [UInt8],
                      collector: RunCollector, created: (QEMUMachine) -> Void, cancelled: () -> Bool,
                      log: Log) throws -> QEMUMachine {
        var c = config
        c.initrdFD = nil
        c.kernelCmdline = snapshot.commandLine
        c.planPort = true
        c.restore = QEMUMachine.Configuration.Restore(ramImages: snapshot.ramImages, stateFile: snapshot.stateFile)
        let m = QEMUMachine(c, log: log)
        created(m)
        do {
            try m.start()
            // Built now, after the load: the clock the guest gets is at most a few ms old.
            let bytes = request(archive: archive).encoded()
            let sender = Thread { _ = m.sendToPlanPort(bytes) }
            sender.name = "ktstr-plan-request"
            sender.start()
            let deadline = ContinuousClock.now + timeout
            while collector.restoredState == nil {
                if cancelled() { throw CancellationError() }
                guard !m.hasExited else {
                    throw Failure(description: "qemu exited after the restore: \(BootBaseline.oneLine(m.qemuStderr)) — console: \(BootBaseline.oneLine(String(collector.consoleTail.suffix(400))))")
                }
                guard ContinuousClock.now < deadline else {
                    throw Failure(description: "the restored agent did not answer its plan request within \(timeout)")
                }
                usleep(2000)
            }
            return m
        } catch {
            m.kill()
            _ = m.wait(timeout: .seconds(10))
            throw error
        }
    }

    /// The host's wall clock, fresh entropy, the run's files.
    static func request(archive: [UInt8]) -> PlanRequest {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var g = SystemRandomNumberGenerator()
        let entropy = (0..<entropyBytes).map { _ in UInt8.random(in: 0...255, using: &g) }
        return PlanRequest(realtimeSeconds: Int64(ts.tv_sec), realtimeNanoseconds: UInt32(ts.tv_nsec), entropy: entropy, archive: archive)
    }
}
