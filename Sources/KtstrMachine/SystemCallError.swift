import Glibc

/// A failed system call that is not a KVM ioctl (`sigaction`, `pthread_create`, `eventfd`,
/// `mmap`, ...), with the errno it really returned: a made-up errno would send whoever
/// reads the message after the wrong cause.
public struct SystemCallError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The call as the reader would grep for it, optionally with its subject:
    /// `pthread_create(vCPU 2)`, `sigaction(SIGRTMIN+3)`.
    public var call: String
    public var errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    /// Captures the calling thread's current `errno` (call right after the failing call).
    public static func lastError(_ call: String) -> SystemCallError {
        SystemCallError(call: call, errno: Glibc.errno)
    }

    public var description: String {
        let text = "\(String(cString: strerror(errno))) (errno \(errno))"
        guard let hint = Self.hint(errno) else { return "\(call) failed: \(text)" }
        return "\(call) failed: \(text) — \(hint)"
    }

    private static func hint(_ e: Int32) -> String? {
        switch e {
        case EAGAIN: "a per-user limit was hit (threads: `ulimit -u`, locked memory: `ulimit -l`); lower the vCPU count or raise the limit"
        case ENOMEM: "the host is out of memory (or vm.max_map_count is exhausted): lower the guest's memory or free host memory"
        case EMFILE, ENFILE: "too many open files: raise `ulimit -n`"
        case EACCES, EPERM: "permission denied: check the device's group and mode (for /dev/kvm: group kvm)"
        case ENOENT, ENODEV, ENXIO: "the device or file does not exist here"
        default: nil
        }
    }
}
