import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// A progress line for a provisioning step that takes over a second ("downloading ...").
public typealias ProvisioningProgress = @Sendable (String) -> Void

/// What a provisioning step did.
public enum StepOutcome: String, Codable, Sendable {
    /// Everything was already there.
    case cached
    /// The step did work (downloaded, extracted, built).
    case done
}

/// A kernel in the cache, as `ktstr kernel list` shows it.
public struct CachedKernel: Codable, Sendable, Equatable {
    public var version: String
    public var directory: String
    public var image: String?
    public var imageBytes: UInt64?
    public var vmlinux: String?
    public var vmlinuxBytes: UInt64?
    /// The kernel's config (`/boot/config-<release>` in the guest, for libbpf's `__kconfig`).
    public var config: String?
    /// Has a stamp: fetched (or adopted) and verified by `ktstr kernel fetch` / `ktstr setup`.
    public var complete: Bool
}

extension Provisioning {
    public static let defaultKernelPackage = "linux-binary-unsigned-\(defaultKernelVersion)"

    static var kernelsDirectory: String { cacheDirectory + "/kernels" }
    static var aptDirectory: String { cacheDirectory + "/apt" }
    static var scratchParent: String { cacheDirectory + "/tmp" }

    static func kernelStampKey(version: String, package: String) -> String {
        "kernel v2 \(version) from \(package) + \(kernelConfigPackage(version: version)) (\(PrivateApt.suite))"
    }

    /// Downloads the default kernel when it is not cached, extracts the ELF vmlinux from
    /// its bzImage, fetches its config, and returns them. Idempotent; a cache filled by hand
    /// (vmlinuz, maybe vmlinux and config, no stamp) or by an older ktstr (no config) is
    /// verified and completed instead of downloaded again.
    public static func fetchDefaultKernel(progress: ProvisioningProgress = { _ in }) throws -> KernelArtifacts {
        try fetchKernel(version: defaultKernelVersion, progress: progress)
    }

    /// Any Debian kernel version the private apt setup can see (`linux-binary-unsigned-<version>`
    /// in trixie-backports, e.g. `7.2.12+deb13-cloud-amd64`), fetched like the default one into
    /// `<cache>/kernels/<version>`; `--kernel <version>` then boots it. Whether it has sched_ext
    /// is for the caller to check (`KernelCapabilities.hasSchedExt`).
    public static func fetchKernel(version: String, progress: ProvisioningProgress = { _ in }) throws -> KernelArtifacts {
        guard isValidKernelVersion(version) else {
            throw ProvisioningError.failed(step: "fetch kernel \(version)",
                                           detail: "not a Debian kernel version (like \(defaultKernelVersion))")
        }
        let lock = try lockCache(progress: progress)
        defer { close(lock) }
        return try ensureKernel(version: version, shell: ProvisioningShell(), progress: progress).artifacts
    }

    /// Letters, digits and `.+~-` only: the version becomes a package name and a directory.
    public static func isValidKernelVersion(_ v: String) -> Bool {
        !v.isEmpty && v.count <= 100 && v.first != "." && v.first != "-"
            && v.unicodeScalars.allSatisfy { ($0.properties.isASCIIHexDigit || ("a"..."z").contains($0) || ("A"..."Z").contains($0)
                || "0123456789.+~-".unicodeScalars.contains($0)) }
    }

    static func ensureDefaultKernel(shell: ProvisioningShell, progress: ProvisioningProgress)
        throws -> (artifacts: KernelArtifacts, outcome: StepOutcome, detail: String)
    {
        try ensureKernel(version: defaultKernelVersion, shell: shell, progress: progress)
    }

    static func ensureKernel(version: String, shell: ProvisioningShell, progress: ProvisioningProgress)
        throws -> (artifacts: KernelArtifacts, outcome: StepOutcome, detail: String)
    {
        let package = "linux-binary-unsigned-\(version)"
        let dir = "\(kernelsDirectory)/\(version)"
        let (image, vmlinux, versionFile) = (dir + "/vmlinuz", dir + "/vmlinux", dir + "/version")
        let config = dir + "/" + kernelConfigFile
        let stamp = ProvisioningStamp(path: dir + "/.stamp")
        let key = kernelStampKey(version: version, package: package)
        let artifacts = KernelArtifacts(image: image, vmlinux: vmlinux, version: version, config: config)
        if stamp.isValid(key: key, outputs: [image, vmlinux, versionFile, config]) {
            return (artifacts, .cached, "\(version) at \(dir)")
        }
        var did: [String] = []
        if !BzImagePayload.looksLikeBzImage(atPath: image) {
            try downloadKernelImage(package: package, version: version, to: image,
                                    shell: shell, progress: progress)
            did.append("downloaded \(package)")
        }
        if try ensureVmlinux(image: image, vmlinux: vmlinux, shell: shell, progress: progress) {
            did.append("extracted vmlinux")
        }
        if try ensureKernelConfig(version: version, config: config, shell: shell, progress: progress) {
            did.append("fetched its config from \(kernelConfigPackage(version: version))")
        }
        try ProvisioningFiles.writeAtomically(Data((version + "\n").utf8), to: versionFile)
        try stamp.write(key: key)
        if did.isEmpty { did.append("verified the existing files") }
        return (artifacts, .done, "\(version) at \(dir): " + did.joined(separator: ", "))
    }

    /// apt-get download + dpkg-deb -x, then the bzImage moves into place by rename.
    static func downloadKernelImage(package: String, version: String, to image: String,
                                    shell: ProvisioningShell, progress: ProvisioningProgress) throws {
        let scratch = try ProvisioningFiles.scratchDirectory(in: scratchParent, prefix: "kernel")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let root = try PrivateApt(root: aptDirectory, shell: shell)
            .downloadAndUnpack(package, into: scratch, timeout: 300, progress: progress)
        let inside = root + "/usr/lib/modules/\(version)/vmlinuz.unsigned"
        guard BzImagePayload.looksLikeBzImage(atPath: inside) else {
            throw ProvisioningError.failed(step: "unpack \(package)",
                                           detail: "no bzImage at usr/lib/modules/\(version)/vmlinuz.unsigned in the package — the package layout changed; set KTSTR_KERNEL instead")
        }
        try ProvisioningFiles.makeDirectory((image as NSString).deletingLastPathComponent)
        try ProvisioningFiles.copyAtomically(inside, to: image)
    }

    /// Makes `vmlinux` the ELF inside `image` unless it already is (same size as the bzImage
    /// says, ELF magic). Returns whether it extracted.
    static func ensureVmlinux(image: String, vmlinux: String, shell: ProvisioningShell,
                              progress: ProvisioningProgress) throws -> Bool {
        guard let bytes = FileManager.default.contents(atPath: image) else {
            throw ProvisioningError.failed(step: "read \(image)", detail: "cannot read it — check permissions")
        }
        let payload: BzImagePayload
        do { payload = try BzImagePayload(bzImage: Array(bytes)) } catch {
            throw ProvisioningError.failed(step: "parse \(image)", detail: error.description)
        }
        if BzImagePayload.isELF(atPath: vmlinux, size: payload.decompressedSize) { return false }
        guard payload.compression == .zstd else {
            throw ProvisioningError.failed(step: "extract vmlinux from \(image)",
                                           detail: "payload is \(payload.compression), ktstr only unpacks zstd — pass the vmlinux yourself next to the bzImage")
        }
        guard ProvisioningShell.which("zstd") != nil else {
            throw ProvisioningError.missing(what: "zstd not found (needed to unpack the kernel's vmlinux)",
                                            fix: "apt-get install zstd (or run `swift run ktstr setup` as root)")
        }
        progress("extracting vmlinux from \((image as NSString).lastPathComponent) (zstd)")
        let scratch = try ProvisioningFiles.scratchDirectory(in: scratchParent, prefix: "vmlinux")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let frame = scratch + "/payload.zst"
        try ProvisioningFiles.writeAtomically(bytes.subdata(in: payload.frame), to: frame)
        let out = scratch + "/vmlinux"
        try shell.check(["zstd", "-d", "-q", "-f", frame, "-o", out], timeout: 300,
                        fix: "the kernel image may be corrupt: delete \(image) and fetch again")
        guard BzImagePayload.isELF(atPath: out, size: payload.decompressedSize) else {
            throw ProvisioningError.failed(step: "extract vmlinux from \(image)",
                                           detail: "the unpacked payload is not an ELF of \(payload.decompressedSize) bytes — delete \(image) and fetch again")
        }
        try ProvisioningFiles.rename(out, to: vmlinux)
        return true
    }

    /// Kernels under `<cache>/kernels`, sorted by version.
    public static func cachedKernels() -> [CachedKernel] {
        let fm = FileManager.default
        let names = ((try? fm.contentsOfDirectory(atPath: kernelsDirectory)) ?? []).sorted()
        return names.compactMap { name in
            let dir = "\(kernelsDirectory)/\(name)"
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { return nil }
            let version = (try? String(contentsOfFile: dir + "/version", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? name
            let image = fm.fileExists(atPath: dir + "/vmlinuz") ? dir + "/vmlinuz" : nil
            let vmlinux = fm.fileExists(atPath: dir + "/vmlinux") ? dir + "/vmlinux" : nil
            let config = dir + "/" + kernelConfigFile
            return CachedKernel(version: version.isEmpty ? name : version, directory: dir,
                                image: image, imageBytes: image.flatMap(ProvisioningFiles.size),
                                vmlinux: vmlinux, vmlinuxBytes: vmlinux.flatMap(ProvisioningFiles.size),
                                config: fm.fileExists(atPath: config) ? config : nil,
                                complete: fm.fileExists(atPath: dir + "/.stamp"))
        }
    }
}
