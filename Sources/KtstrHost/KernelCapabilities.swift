import Foundation
import Synchronization
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Facts about the guest kernel that decide whether a scheduler test can run on it.
/// (Which VMM runs it is `BackendSelection`'s business.)
public enum KernelCapabilities {
    private static let schedExtCache = Mutex<[String: Bool]>([:])

    /// Whether a vmlinux's BTF describes sched_ext (CONFIG_SCHED_CLASS_EXT: `struct scx_sched`
    /// or `struct sched_ext_ops`). Parsed once per path (the monitor shares the parsed BTF);
    /// a file whose BTF cannot be read counts as "yes" (the run itself will tell).
    public static func hasSchedExt(vmlinux: String) -> Bool {
        if let known = schedExtCache.withLock({ $0[vmlinux] }) { return known }
        let found: Bool
        do { found = try SchedExtSupport.present(vmlinux: vmlinux) } catch { found = true }
        schedExtCache.withLock { $0[vmlinux] = found }
        return found
    }
}
