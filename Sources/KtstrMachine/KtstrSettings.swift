import Foundation

/// Every `KTSTR_*` environment variable, read in this one place into a value that is passed
/// down (`KtstrSettings.current` where nobody passed one). `variables` is the table the README
/// and `ktstr doctor` print: add a variable there and here, nowhere else.
public struct KtstrSettings: Sendable, Equatable {
    public struct Variable: Sendable {
        public let name: String
        public let meaning: String
    }

    public static let variables: [Variable] = [
        Variable(name: "KTSTR_LOG", meaning: "debug|info|warning|error|off: diagnostics on stderr (default warning)"),
        Variable(name: "KTSTR_CACHE_DIR", meaning: "where setup puts kernels, schedulers, the agent (default ~/.cache/ktstr)"),
        Variable(name: "KTSTR_KERNEL", meaning: "a bzImage or vmlinux to boot instead of the cached default kernel"),
        Variable(name: "KTSTR_AGENT", meaning: "a guest agent binary to use instead of the cached one"),
        Variable(name: "KTSTR_BACKEND", meaning: "kvm|qemu|qemu-tcg|auto: force a backend when the code says auto"),
        Variable(name: "KTSTR_CMDLINE", meaning: "extra guest kernel arguments (e.g. loglevel=7)"),
        Variable(name: "KTSTR_MONITOR", meaning: "off: no failure monitor (diagnosis only: no dumps)"),
        Variable(name: "KTSTR_MAX_VMS", meaning: "N: at most N VMs at once per process (default: by host cores)"),
        Variable(name: "KTSTR_TCG_THREAD", meaning: "single|multi: qemu TCG threading (default single)"),
        Variable(name: "KTSTR_ARTIFACTS_DIR", meaning: "where tests write run artifacts (default .build/ktstr)"),
        Variable(name: "KTSTR_SNAPSHOT", meaning: "off: boot every QEMU run cold instead of restoring a cached boot snapshot"),
        Variable(name: "KTSTR_DEBIAN_MIRROR", meaning: "Debian mirror URL for kernel and source downloads"),
        Variable(name: "KTSTR_KVM_FAULT", meaning: "boot|no-hello: test hook, KVMMachine fails before the agent's hello (exercises the fallback to qemu)"),
    ]

    public var logLevel: Log.Level
    public var cacheDirectory: String?
    public var kernel: String?
    public var agent: String?
    public var backend: String?
    public var extraCmdline: String?
    public var monitorEnabled: Bool
    public var maxVMs: Int?
    public var tcgThreads: String?
    public var artifactsDirectory: String?
    public var debianMirror: String?
    /// `KTSTR_SNAPSHOT=off`: QEMU runs boot cold (docs/DESIGN-NOTES.md "Boot snapshots").
    public var snapshotEnabled: Bool
    /// `KTSTR_KVM_FAULT`, unparsed (KtstrHost's `KVMFault` names the values).
    public var kvmFault: String?

    /// Empty values count as unset.
    public init(environment env: [String: String]) {
        func value(_ name: String) -> String? {
            precondition(Self.variables.contains { $0.name == name }, "\(name) missing from KtstrSettings.variables")
            return env[name].flatMap { $0.isEmpty ? nil : $0 }
        }
        logLevel = switch value("KTSTR_LOG")?.lowercased() {
        case "debug", "trace": .debug
        case "info": .info
        case "error": .error
        case "off", "quiet": .off
        default: .warning
        }
        cacheDirectory = value("KTSTR_CACHE_DIR")
        kernel = value("KTSTR_KERNEL")
        agent = value("KTSTR_AGENT")
        backend = value("KTSTR_BACKEND")
        extraCmdline = value("KTSTR_CMDLINE")
        monitorEnabled = value("KTSTR_MONITOR")?.lowercased() != "off"
        maxVMs = value("KTSTR_MAX_VMS").flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil }
        tcgThreads = value("KTSTR_TCG_THREAD")
        artifactsDirectory = value("KTSTR_ARTIFACTS_DIR")
        debianMirror = value("KTSTR_DEBIAN_MIRROR")
        snapshotEnabled = value("KTSTR_SNAPSHOT")?.lowercased() != "off"
        kvmFault = value("KTSTR_KVM_FAULT")
    }

    /// This process's environment, read once.
    public static let current = KtstrSettings(environment: ProcessInfo.processInfo.environment)

    /// The variables that are set, as `NAME=value` lines (for `ktstr doctor` and bug reports).
    public static func setVariables(in env: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        variables.compactMap { v in env[v.name].map { "\(v.name)=\($0)" } }
    }
}
