import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// apt-get with a private sources list, lists and cache under `<cache>/apt`: downloads
/// packages from trixie-backports without reading or changing the system's apt config.
public struct PrivateApt: Sendable {
    public static let suite = "trixie-backports"
    public static let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

    public var root: String
    public var shell: ProvisioningShell

    public init(root: String, shell: ProvisioningShell) {
        self.root = root
        self.shell = shell
    }

    var sourcesDir: String { root + "/sources.list.d" }
    var sourcesFile: String { sourcesDir + "/ktstr-\(Self.suite).sources" }
    var listsDir: String { root + "/lists" }
    var cacheDir: String { root + "/cache" }
    var logsDir: String { root + "/logs" }

    /// The `-o` options that point apt at the private files only.
    public var options: [String] {
        var o = [
            "-o", "Dir::Etc::SourceList=/dev/null",
            "-o", "Dir::Etc::SourceParts=\(sourcesDir)",
            "-o", "Dir::State::Lists=\(listsDir)",
            "-o", "Dir::Cache=\(cacheDir)",
            "-o", "Dir::Cache::archives=\(cacheDir)/archives",
        ]
        // As root apt drops to user _apt, which cannot write into a cache under /root.
        if geteuid() == 0 { o += ["-o", "APT::Sandbox::User=root"] }
        return o
    }

    /// The Debian mirror to use: `KTSTR_DEBIAN_MIRROR`, else the system's own sources.
    public static func mirror(systemRoot: String = "/etc/apt") throws -> String {
        if let m = KtstrSettings.current.debianMirror { return m }
        guard let m = AptSources.system(root: systemRoot).debianMirror else {
            throw ProvisioningError.missing(
                what: "no Debian mirror in \(systemRoot)/sources.list{,.d} (ktstr downloads kernels from Debian \(suite))",
                fix: "set KTSTR_DEBIAN_MIRROR to a Debian mirror URL, or set KTSTR_KERNEL to a kernel you have")
        }
        return m
    }

    /// Writes the private deb822 file (when it changed) and refreshes the private lists
    /// (when `force`, or when there are none yet).
    public func prepare(force: Bool = false, progress: ProvisioningProgress) throws {
        guard ProvisioningShell.which("apt-get") != nil else {
            throw ProvisioningError.missing(what: "apt-get not found",
                                            fix: "ktstr downloads Debian packages with apt; on other systems set KTSTR_KERNEL")
        }
        guard FileManager.default.fileExists(atPath: Self.keyring) else {
            throw ProvisioningError.missing(what: "\(Self.keyring) is missing",
                                            fix: "apt-get install debian-archive-keyring")
        }
        let text = AptSources.privateSource(mirror: try Self.mirror(), suite: Self.suite, keyring: Self.keyring)
        let changed = (try? String(contentsOfFile: sourcesFile, encoding: .utf8)) != text
        for d in [sourcesDir, listsDir + "/partial", cacheDir + "/archives/partial", logsDir] {
            try ProvisioningFiles.makeDirectory(d)
        }
        if changed { try ProvisioningFiles.writeAtomically(Data(text.utf8), to: sourcesFile) }
        let haveLists = ((try? FileManager.default.contentsOfDirectory(atPath: listsDir)) ?? [])
            .contains { $0.contains("_Packages") }
        guard force || changed || !haveLists else { return }
        progress("apt-get update (private lists for \(Self.suite))")
        try shell.check(["apt-get"] + options + ["update"], logFile: logsDir + "/update.log", timeout: 600,
                        fix: "check network access to the Debian mirror in \(sourcesFile)")
    }

    /// Downloads `package` into `directory` and returns the .deb's path. Refreshes the lists
    /// once if apt does not know the package (the lists may be old).
    public func download(_ package: String, into directory: String, progress: ProvisioningProgress) throws -> String {
        try prepare(progress: progress)
        progress("downloading \(package) from \(Self.suite)")
        let argv = ["apt-get"] + options + ["download", package]
        var r = try shell.run(argv, cwd: directory, logFile: logsDir + "/download.log", timeout: 900)
        if r.status != 0 {
            try prepare(force: true, progress: progress)
            r = try shell.run(argv, cwd: directory, logFile: logsDir + "/download.log", timeout: 900)
        }
        guard r.status == 0 else {
            let tail = r.tail.split(separator: "\n").suffix(4).joined(separator: " | ")
            throw ProvisioningError.failed(
                step: "apt-get download \(package)",
                detail: "\(tail) — is \(package) still in \(Self.suite)? (Debian drops old versions; "
                    + "set KTSTR_KERNEL to a kernel you have, or update ktstr's default kernel)")
        }
        let debs = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".deb") }
        guard let deb = debs.first(where: { $0.hasPrefix(package + "_") }) ?? debs.first else {
            throw ProvisioningError.failed(step: "apt-get download \(package)", detail: "no .deb appeared in \(directory)")
        }
        return directory + "/" + deb
    }

    /// `download` + `dpkg-deb -x` into `<directory>/x`; the .deb is deleted afterwards.
    /// Returns the unpacked root.
    public func downloadAndUnpack(_ package: String, into directory: String, timeout: Double,
                                  progress: ProvisioningProgress) throws -> String {
        let deb = try download(package, into: directory, progress: progress)
        progress("unpacking \((deb as NSString).lastPathComponent)")
        let root = directory + "/x"
        try shell.check(["dpkg-deb", "-x", deb, root], timeout: timeout,
                        fix: "the download may be corrupt: run the command again")
        try? FileManager.default.removeItem(atPath: deb)
        return root
    }
}
