import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Builds the initramfs of one run (docs/PROTOCOLS.md "Initramfs the host builds"): the agent
/// as /init, the scheduler at /ktstr/bin/scheduler, every shared library both load (at the
/// paths the guest's loader opens), /ktstr/plan.json, the /ktstr/ok sentinel, and the
/// kernel's config at /ktstr/kconfig with /boot/config-<release> linking to it (libbpf reads
/// that file to resolve a scheduler's `__kconfig` externs).
public struct InitramfsAssembler: Sendable {
    public static let schedulerGuestPath = "/ktstr/bin/scheduler"
    /// Where the kernel config lies in the guest; `/boot/config-<release>` links here (the
    /// agent adds the link itself when the host could not tell the release).
    public static let kernelConfigGuestPath = "/ktstr/kconfig"

    public var agentPath: String
    public var schedulerPath: String?
    public var planJSON: [UInt8]
    public var closure: SharedLibraryClosure
    /// The kernel's config on the host (`KernelArtifacts.config`), if any.
    public var kernelConfig: String?
    /// The release the guest will report (`KernelRelease.fromImage`), if known.
    public var kernelRelease: String?
    /// More programs (host path, guest path), with their shared libraries: busybox for `ktstr shell`.
    public var extraFiles: [(hostPath: String, guestPath: String)] = []
    /// Guest paths left out of the archive because the guest has them already: a restored
    /// snapshot's agent and libraries (the plan request carries only the rest).
    public var omitGuestPaths: Set<String> = []

    public init(agentPath: String, schedulerPath: String?, planJSON: [UInt8], closure: SharedLibraryClosure = SharedLibraryClosure(),
                kernelConfig: String? = nil, kernelRelease: String? = nil) {
        self.agentPath = agentPath; self.schedulerPath = schedulerPath; self.planJSON = planJSON; self.closure = closure
        self.kernelConfig = kernelConfig; self.kernelRelease = kernelRelease
    }

    /// The assembler for one run of `kernel`: its config, under the release its image states.
    public init(agentPath: String, schedulerPath: String?, planJSON: [UInt8], kernel: KernelArtifacts) {
        self.init(agentPath: agentPath, schedulerPath: schedulerPath, planJSON: planJSON,
                  kernelConfig: kernel.config,
                  kernelRelease: KernelRelease.fromImage(atPath: kernel.image) ?? kernel.version)
    }

    /// The archive and the list of (guest path ← host path) it carries.
    public func assemble() throws -> (bytes: [UInt8], files: [SharedLibraryClosure.Placement]) {
        var roots = [(hostPath: agentPath, guestPath: "/init")]
        if let schedulerPath { roots.append((schedulerPath, Self.schedulerGuestPath)) }
        roots += extraFiles
        let files = try closure.resolve(roots)
        var archive = Initramfs()
        for f in files where !omitGuestPaths.contains(f.guestPath) {
            guard let data = FileManager.default.contents(atPath: f.hostPath) else {
                throw SharedLibraryClosure.ResolveError.unreadable(f.hostPath)
            }
            archive.addFile(f.guestPath, contents: [UInt8](data), mode: 0o755)
        }
        archive.addFile("/ktstr/plan.json", contents: planJSON)
        if let kernelConfig {
            guard let data = FileManager.default.contents(atPath: kernelConfig) else {
                throw SharedLibraryClosure.ResolveError.unreadable(kernelConfig)
            }
            archive.addFile(Self.kernelConfigGuestPath, contents: [UInt8](data))
            if let release = kernelRelease, !release.isEmpty, !release.contains("/") {
                archive.addSymlink("/boot/config-\(release)", target: Self.kernelConfigGuestPath)
            }
        }
        archive.addFile("/ktstr/ok", contents: Array("ok\n".utf8))
        return (archive.bytes(), files)
    }
}
