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

    /// Whether a vmlinux's BTF names sched_ext's ops (CONFIG_SCHED_CLASS_EXT). Scans the
    /// file once per path; an unreadable file counts as "yes" (the run itself will tell).
    public static func hasSchedExt(vmlinux: String) -> Bool {
        if let known = schedExtCache.withLock({ $0[vmlinux] }) { return known }
        var found = true
        if let data = FileManager.default.contents(atPath: vmlinux) {
            found = data.range(of: Data("sched_ext_ops".utf8)) != nil
        }
        schedExtCache.withLock { $0[vmlinux] = found }
        return found
    }
}
