import Foundation
import Synchronization

/// Facts about this host that decide what ktstr can run here.
public enum HostCapabilities {
    /// nil when /dev/kvm opens read-write and the CPU has vmx/svm (KVM can run a stock
    /// kernel); else why not, with the fix.
    public static func kvmCannotBootLinux() -> String? {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        if fd < 0 {
            return errno == EACCES ? "/dev/kvm: permission denied — add yourself to group kvm"
                                   : "/dev/kvm is not available — load kvm_intel/kvm_amd, or use the qemu backend"
        }
        close(fd)
        if !hasHardwareVirtualization() {
            return "the CPU has no vmx/svm (nested PVM?): KVM emulates kernel code and cannot run a stock kernel here"
        }
        return nil
    }

    public static var kvmDeviceUsable: Bool {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }

    public static func hasHardwareVirtualization() -> Bool {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        guard let flags = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        let words = Set(flags.split(separator: " "))
        return words.contains("vmx") || words.contains("svm")
    }

    private static let schedExtCache = Mutex<[String: Bool]>([:])

    /// Whether a vmlinux's BTF names sched_ext's ops (CONFIG_SCHED_CLASS_EXT). Scans the
    /// file once per path; an unreadable file counts as "yes" (the run itself will tell).
    public static func kernelHasSchedExt(vmlinux: String) -> Bool {
        if let known = schedExtCache.withLock({ $0[vmlinux] }) { return known }
        var found = true
        if let data = FileManager.default.contents(atPath: vmlinux) {
            found = data.range(of: Data("sched_ext_ops".utf8)) != nil
        }
        schedExtCache.withLock { $0[vmlinux] = found }
        return found
    }
}
