import Foundation
import KtstrMachine
import KtstrSchedExt
import KtstrProtocol

/// Whether this host can run a ktstr VM test, and if not, why and how to fix it.
/// Used by `.ktstr(...)` to skip (not fail, not pass) tests that cannot run here.
public enum KtstrAvailability {
    /// nil when a VM of this shape can run here; else one line with the cause and the fix.
    public static func unavailableReason(for config: VMConfig) -> String? {
        let kernel: KernelArtifacts
        do { kernel = try Provisioning.kernel(explicit: config.kernel, registry: config.registry) } catch { return "\(error)" }
        do { try SchedulerRun.requireSchedExt(vmlinux: kernel.vmlinux, kernel: kernel.image, schedulerRequested: true) } catch {
            return "\(error)"
        }
        do { _ = try Provisioning.agentBinary() } catch { return "\(error)" }
        let decision: BackendSelection.Decision
        do { decision = try BackendSelection.decide(config.backend) } catch { return "\(error)" }
        if decision.backend != .kvm {
            do { _ = try Provisioning.qemuBinary() } catch { return "\(error)" }
        }
        return nil
    }
}
