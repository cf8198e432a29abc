import Foundation
import KtstrMachine
import KtstrVMM

/// `ktstr doctor`'s check of KVMMachine itself: boot the cached kernel with the agent on our
/// own VMM, no scheduler, and wait for the agent's hello within a bound. No fallback: the
/// point is to see KVMMachine's own result.
public enum KVMSelfTest {
    public struct AgentBoot: Codable, Sendable {
        /// The agent said hello on KVMMachine.
        public var ok: Bool
        /// Machine start → hello.
        public var bootMillis: Int?
        /// The whole try (initramfs, boot, power-off).
        public var wallMillis: Int
        /// Why it failed (the run's problems, or the error), nil when ok.
        public var failure: String?
    }

    /// How long the agent boot may take on a vmx/svm host (a boot there takes about a second).
    public static let agentBootBound: Duration = .seconds(30)

    /// Boots to the agent's hello on KVMMachine within `bound`.
    public static func bootToAgent(bound: Duration = agentBootBound, log: Log = .silent) async -> AgentBoot {
        let started = ContinuousClock.now
        var settings = KtstrSettings.current
        settings.kvmFault = nil
        do {
            let o = try await SchedulerRun.attempt(
                vm: VMConfig(topology: .flat(1), backend: .kvm, timeoutSeconds: Double(bound.components.seconds)),
                scheduler: .none, workload: .idle, duration: .milliseconds(100), artifactsDirectory: nil, log: log,
                agentPath: nil, settings: settings, partialOutcomeOnCancel: false, onMachine: nil, live: LiveOptions(), scenario: nil,
                allowFallback: false)
            let ok = o.backend == .kvm && o.bootMillis != nil
            return AgentBoot(ok: ok, bootMillis: o.bootMillis, wallMillis: o.wallMillis,
                             failure: ok ? nil : o.problems.map(\.description).joined(separator: "; "))
        } catch {
            return AgentBoot(ok: false, bootMillis: nil, wallMillis: SchedulerRun.millis(ContinuousClock.now - started),
                             failure: "\(error)")
        }
    }
}
