import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// The guest kernel's release (`uname -r`) as the image states it: a bzImage's setup header
/// points at a version string ("7.3.4+deb13-cloud-amd64 (debian-kernel@...) #1 SMP ...")
/// whose first word is the release. Bounds-checked; `nil` for anything else (an ELF vmlinux).
public enum KernelRelease {
    /// Reads the first 64 KiB of `path` (the setup code, where the string lives).
    public static func fromImage(atPath path: String) -> String? {
        guard let h = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? h.close() }
        guard let data = try? h.read(upToCount: 64 << 10) else { return nil }
        return fromBzImage(Array(data))
    }

    public static func fromBzImage(_ b: [UInt8]) -> String? {
        // boot_flag 0xAA55 at 0x1FE, "HdrS" at 0x202, kernel_version (u16) at 0x20E: offset
        // of the NUL-terminated string from 0x200 (Documentation/arch/x86/boot.rst).
        guard b.count > 0x210, b[0x1FE] == 0x55, b[0x1FF] == 0xAA,
              b[0x202..<0x206].elementsEqual("HdrS".utf8) else { return nil }
        let rel = Int(b[0x20E]) | Int(b[0x20F]) << 8
        guard rel != 0 else { return nil }
        let start = 0x200 + rel
        guard start < b.count else { return nil }
        let end = b[start...].prefix(256).firstIndex { $0 == 0 || $0 == 0x20 } ?? min(b.count, start + 256)
        let release = String(decoding: b[start..<end], as: UTF8.self)
        guard !release.isEmpty, release.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "/") }) else { return nil }
        return release
    }
}

extension Provisioning {
    /// The name of the config file in a cached kernel's directory.
    static let kernelConfigFile = "config"

    /// The kernel config that belongs to a user's kernel image, where one is found: `.config`
    /// (or `config`) next to the image, the tree's `.config` for `arch/<arch>/boot/bzImage`,
    /// and `/boot/config-<r>` for `/boot/vmlinuz-<r>`.
    static func kernelConfig(nextTo image: String) -> String? {
        let url = URL(fileURLWithPath: image).standardizedFileURL
        let dir = url.deletingLastPathComponent()
        var candidates = [dir.appendingPathComponent(".config").path, dir.appendingPathComponent("config").path]
        let comps = url.pathComponents
        if comps.count >= 4, comps[comps.count - 4] == "arch", comps[comps.count - 2] == "boot" {
            candidates.append(dir.deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent(".config").path)
        }
        let name = url.lastPathComponent
        for prefix in ["vmlinuz-", "vmlinux-"] where name.hasPrefix(prefix) {
            candidates.append(dir.appendingPathComponent("config-" + name.dropFirst(prefix.count)).path)
        }
        return candidates.first { looksLikeKernelConfig(atPath: $0) }
    }

    /// A kconfig file: text that sets CONFIG_ symbols (plain; libbpf also reads gzip, but
    /// ktstr only ever copies plain ones).
    static func looksLikeKernelConfig(atPath path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        guard let head = try? h.read(upToCount: 16 << 10) else { return false }
        let text = String(decoding: head, as: UTF8.self)
        return text.contains("\nCONFIG_") || text.hasPrefix("CONFIG_")
    }

    /// The Debian package that ships `<version>`'s config (7.x packaging: linux-base-<v> holds
    /// usr/lib/modules/<v>/config; the image package no longer does).
    static func kernelConfigPackage(version: String) -> String { "linux-base-\(version)" }

    /// Where a config sits in an unpacked Debian kernel package, if it does.
    static func kernelConfig(inUnpacked root: String, version: String) -> String? {
        ["\(root)/usr/lib/modules/\(version)/config", "\(root)/lib/modules/\(version)/config", "\(root)/boot/config-\(version)"]
            .first { looksLikeKernelConfig(atPath: $0) }
    }

    /// Makes `config` the kernel's config unless it already is: downloads
    /// `linux-base-<version>` (about 1 MB) and takes the config out of it. Returns whether it
    /// downloaded.
    static func ensureKernelConfig(version: String, config: String, shell: ProvisioningShell,
                                   progress: ProvisioningProgress) throws -> Bool {
        if looksLikeKernelConfig(atPath: config) { return false }
        let package = kernelConfigPackage(version: version)
        let scratch = try ProvisioningFiles.scratchDirectory(in: scratchParent, prefix: "kconfig")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let root = try PrivateApt(root: aptDirectory, shell: shell)
            .downloadAndUnpack(package, into: scratch, timeout: 300, progress: progress)
        guard let found = kernelConfig(inUnpacked: root, version: version) else {
            throw ProvisioningError.failed(step: "unpack \(package)",
                                           detail: "no usr/lib/modules/\(version)/config or boot/config-\(version) in the package — the package layout changed; put the kernel's config at \(config) by hand")
        }
        try ProvisioningFiles.copyAtomically(found, to: config)
        return true
    }
}

extension Provisioning {
    /// One line for a kernel without a config: what fails and what fixes it.
    public static func missingKernelConfigAdvice(_ kernel: KernelArtifacts) -> String {
        let fix = kernel.image.hasPrefix(kernelsDirectory + "/")
            ? "run `swift run ktstr kernel fetch \(kernel.version ?? defaultKernelVersion)` (fetches it into the cache)"
            : "put the kernel's .config next to \(kernel.image)"
        return "no kernel config for \(kernel.image): schedulers with __kconfig externs (CONFIG_*) "
            + "will fail to load (libbpf: failed to open system Kconfig) — \(fix)"
    }
}
