import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Picks the VMM for a run: an explicit choice (argument, else `KTSTR_BACKEND`), or automatic:
/// hardware virtualisation (vmx/svm in /proc/cpuinfo and /dev/kvm opens) → KVM, else TCG.
///
/// "kvm" is our own KVMMachine. Automatic selection takes it only with vmx/svm: a nested PVM
/// /dev/kvm without them emulates the kernel's supervisor code (~100x slow) and a stock
/// kernel dies at int3_selftest there. An explicit "kvm" needs only a /dev/kvm that opens
/// (useful for early-boot work on such hosts). "qemu" is qemu with -accel kvm when KVM is
/// usable, else TCG; "qemu-tcg" is always TCG.
public enum BackendSelection {
    public struct Decision: Sendable, Equatable {
        public var backend: BackendKind
        public var why: String
        /// Said at the default log level: the choice will be slow or may fail (a forced kvm
        /// without vmx/svm), so a user must not wait minutes to find out.
        public var warning: String?
    }

    public enum SelectionError: Error, CustomStringConvertible {
        case kvmUnavailable(String)
        case unknown(String)
        public var description: String {
            switch self {
            case let .kvmUnavailable(why): "backend kvm requested but \(why) — use KTSTR_BACKEND=qemu-tcg (or auto)"
            case let .unknown(v): "KTSTR_BACKEND='\(v)' is not one of kvm, qemu, qemu-tcg, auto"
            }
        }
    }

    public struct Host: Sendable {
        public var cpuinfo: String
        public var kvmOpens: Bool
        public static func probe() -> Host {
            let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
            let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
            if fd >= 0 { close(fd) }
            return Host(cpuinfo: info, kvmOpens: fd >= 0)
        }
        /// vmx/svm among the flags of the first CPU.
        public var hasHardwareVirtualization: Bool {
            guard let flags = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
            let words = Set(flags.split(separator: " "))
            return words.contains("vmx") || words.contains("svm")
        }
    }

    /// How long the agent waits for the scheduler to attach: the BPF verifier and JIT run in
    /// the guest kernel, so this follows how fast kernel code runs on the backend. KVMMachine
    /// without vmx/svm (nested PVM) emulates kernel code: minutes.
    static func attachTimeoutMillis(_ backend: BackendKind, host: Host = .probe()) -> Int {
        switch backend {
        case .qemuTCG: 30_000
        case .qemuKVM: 10_000
        case .kvm: host.hasHardwareVirtualization ? 10_000 : 1_200_000
        }
    }

    public static func decide(_ choice: BackendChoice, settings: KtstrSettings = .current,
                              host: Host = .probe()) throws -> Decision {
        var effective = choice
        if choice == .auto, let env = settings.backend {
            guard let c = BackendChoice(rawValue: env.lowercased()) else { throw SelectionError.unknown(env) }
            effective = c
        }
        let kvmOK = host.hasHardwareVirtualization && host.kvmOpens
        let kvmWhy = !host.kvmOpens ? "/dev/kvm cannot be opened" : "/proc/cpuinfo has no vmx/svm (nested PVM cannot boot Linux)"
        switch effective {
        case .kvm:
            guard host.kvmOpens else { throw SelectionError.kvmUnavailable("/dev/kvm cannot be opened") }
            guard host.hasHardwareVirtualization else {
                return Decision(backend: .kvm, why: "kvm requested",
                                warning: "backend kvm forced but \(kvmWhy): the guest kernel's code is emulated, boot takes minutes and a stock kernel may not boot at all — unset KTSTR_BACKEND (or use qemu-tcg) unless you are debugging early boot")
            }
            return Decision(backend: .kvm, why: "kvm requested")
        case .qemu:
            return kvmOK ? Decision(backend: .qemuKVM, why: "qemu requested; KVM usable")
                : Decision(backend: .qemuTCG, why: "qemu requested; \(kvmWhy), so TCG")
        case .qemuTCG:
            return Decision(backend: .qemuTCG, why: "qemu-tcg requested")
        case .auto:
            return kvmOK ? Decision(backend: .kvm, why: "vmx/svm present and /dev/kvm opens")
                : Decision(backend: .qemuTCG, why: "\(kvmWhy); using qemu TCG")
        }
    }
}
