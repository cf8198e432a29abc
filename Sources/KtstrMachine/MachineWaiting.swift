import Foundation

extension Machine {
    /// `wait(timeout:)` for async callers: blocks a dedicated thread, never the cooperative
    /// pool (2 threads on a 2-core host), and kills the machine when the task is cancelled
    /// (a test's `.timeLimit`, a cancelled run) so nothing outlives its task.
    public func waitForExit(timeout: Duration) async -> MachineExit {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (done: CheckedContinuation<MachineExit, Never>) in
                let t = Thread { done.resume(returning: self.wait(timeout: timeout)) }
                t.name = "ktstr-wait"
                t.start()
            }
        } onCancel: {
            self.kill()
        }
    }
}
