import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// A guest kernel on disk.
public struct KernelArtifacts: Sendable, Codable, Hashable {
    /// What to boot (bzImage, or an ELF vmlinux).
    public var image: String
    /// Uncompressed ELF with .BTF (for scheduler builds and the monitor), when known.
    public var vmlinux: String?
    public var version: String?
    /// The kernel's config (kconfig text), when known: the guest sees it at
    /// `/boot/config-<release>`, where libbpf resolves `__kconfig` externs (`CONFIG_*`).
    public var config: String?
    public init(image: String, vmlinux: String? = nil, version: String? = nil, config: String? = nil) {
        self.image = image; self.vmlinux = vmlinux; self.version = version; self.config = config
    }
}

public enum ProvisioningError: Error, CustomStringConvertible {
    case missing(what: String, fix: String)
    case failed(step: String, detail: String)
    public var description: String {
        switch self {
        case let .missing(what, fix): "\(what) — \(fix)"
        case let .failed(step, detail): "\(step) failed: \(detail)"
        }
    }
}

/// Where ktstr finds (and `ktstr setup` puts) kernels, schedulers, the agent and qemu.
/// Lookups never download: a missing piece is an error that names the command that fixes it.
public enum Provisioning {
    public static let defaultKernelVersion = "7.3.4+deb13-cloud-amd64"

    public static var cacheDirectory: String {
        if let d = KtstrSettings.current.cacheDirectory { return d }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return home + "/.cache/ktstr"
    }

    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// explicit > `KTSTR_KERNEL` > the cached default kernel. An explicit kernel is a kernel
    /// tree directory, a bzImage or vmlinux, a name registered in `registry` (`ktstr kernel
    /// add`) or a cached Debian version (`kernel(named:registry:)`).
    public static func kernel(explicit: String? = nil, registry: KernelRegistry = .default) throws -> KernelArtifacts {
        if let p = explicit ?? KtstrSettings.current.kernel, !p.isEmpty {
            return try kernel(named: p, registry: registry)
        }
        let dir = "\(cacheDirectory)/kernels/\(defaultKernelVersion)"
        guard exists(dir + "/vmlinuz") else {
            throw ProvisioningError.missing(what: "no cached default kernel (\(defaultKernelVersion))",
                                            fix: "run `swift run ktstr kernel fetch` (or `swift run ktstr setup`)")
        }
        let config = dir + "/" + kernelConfigFile
        return KernelArtifacts(image: dir + "/vmlinuz", vmlinux: exists(dir + "/vmlinux") ? dir + "/vmlinux" : nil,
                               version: defaultKernelVersion, config: exists(config) ? config : nil)
    }

    /// A built test scheduler: "simple" (scx_simple) or "fault" (ktstr-fault).
    public static func scheduler(_ name: String) throws -> String {
        let file = switch name { case "simple": "scx_simple"; case "fault": "ktstr-fault"; default: name }
        let p = "\(cacheDirectory)/schedulers/\(defaultKernelVersion)/\(file)"
        guard exists(p) else {
            throw ProvisioningError.missing(what: "scheduler '\(name)' is not built", fix: "run `swift run ktstr setup`")
        }
        return p
    }

    /// The guest agent: `KTSTR_AGENT`, else the one `ktstr setup` built.
    public static func agentBinary() throws -> String {
        if let p = KtstrSettings.current.agent, exists(p) { return p }
        let p = "\(cacheDirectory)/agent/ktstr-guest"
        guard exists(p) else {
            throw ProvisioningError.missing(what: "the guest agent is not built", fix: "run `swift run ktstr setup`")
        }
        return p
    }

    public static func qemuBinary() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") where exists("\(dir)/qemu-system-x86_64") {
            return "\(dir)/qemu-system-x86_64"
        }
        throw ProvisioningError.missing(what: "qemu-system-x86_64 not found",
                                        fix: "apt-get install qemu-system-x86 (or run `swift run ktstr setup`)")
    }
}
