import Glibc
import KtstrMachine

/// A failed KVM operation: which call, the errno, and what to do about it, in one line.
public enum KVMError: Error, CustomStringConvertible, Equatable {
    /// `/dev/kvm` could not be opened.
    case unavailable(path: String, errno: Int32)
    /// An ioctl failed. `call` names the request (`KVM_CREATE_VM`, `KVM_RUN`...).
    case ioctl(call: String, errno: Int32)
    /// The kernel speaks a KVM API version other than 12.
    case apiVersion(Int32)
    /// A capability the caller needs is absent.
    case missingCapability(String)
    /// A caller-supplied configuration is inconsistent (overlapping memslots, ...).
    case invalidConfiguration(String)
    /// A system call that is not a KVM ioctl failed (an allocation for an ioctl argument...).
    case system(SystemCallError)

    public var description: String {
        switch self {
        case let .unavailable(path, e):
            switch e {
            case ENOENT, ENXIO, ENODEV:
                return "\(path): \(Self.errnoText(e)) — install/enable KVM (load kvm_intel or kvm_amd; in a VM enable nested virtualization) or use the QEMU backend"
            case EACCES, EPERM:
                return "\(path): permission denied — add yourself to group kvm (sudo usermod -aG kvm $USER, then log in again)"
            default:
                return "\(path): \(Self.errnoText(e)) — check that KVM works (ktstr doctor)"
            }
        case let .ioctl(call, e):
            return "\(call) failed: \(Self.errnoText(e)) — \(Self.fix(call: call, errno: e))"
        case let .apiVersion(v):
            return "/dev/kvm reports API version \(v), expected 12 — use a Linux host kernel with a standard KVM"
        case let .missingCapability(cap):
            return "KVM lacks \(cap) — use a newer host kernel or the QEMU backend"
        case let .invalidConfiguration(why):
            return "invalid VM configuration: \(why)"
        case let .system(error):
            return error.description
        }
    }

    static func errnoText(_ e: Int32) -> String {
        "\(String(cString: strerror(e))) (errno \(e))"
    }

    private static func fix(call: String, errno e: Int32) -> String {
        switch e {
        case ENOMEM: return "the host is out of memory: lower the VM's memory or vCPU count, or free host memory"
        case EMFILE, ENFILE: return "too many open files: raise `ulimit -n`"
        case EACCES, EPERM: return "permission denied: add yourself to group kvm"
        case EEXIST: return "already created (one irqchip/PIT/vCPU id per VM)"
        case EINVAL: return "KVM rejected the arguments (a bug in the VMM or an unsupported host feature)"
        case E2BIG: return "the table is larger than KVM accepts"
        case EBUSY: return "KVM is busy with this object (called from the wrong thread or state)"
        default: return "see `ktstr doctor`"
        }
    }
}

/// Calls `body`; on -1 throws `KVMError.ioctl(call:errno:)` with the errno it left.
@inline(__always)
func kvmCall(_ call: String, _ body: () -> Int32) throws(KVMError) -> Int32 {
    let r = body()
    if r < 0 { throw KVMError.ioctl(call: call, errno: errno) }
    return r
}
