import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Kernels registered by name with `ktstr kernel add PATH [--name N]`: a small JSON file
/// (`<cache>/kernels/registry.json`, name → the path given). The registry references the
/// user's files, it never copies them: the path is resolved again (tree, file) on every use,
/// so a rebuilt tree is picked up and a deleted one is an error naming the entry.
public struct KernelRegistry: Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var name: String
        /// What was registered: a kernel tree directory, a bzImage or a vmlinux (absolute).
        public var path: String
        public init(name: String, path: String) { self.name = name; self.path = path }
    }

    /// The registry file. Tests use their own (`init(path:)`); everything else `.default`.
    public var path: String
    public init(path: String) { self.path = path }

    public static var `default`: KernelRegistry { KernelRegistry(path: Provisioning.cacheDirectory + "/kernels/registry.json") }

    struct File: Codable { var version = 1; var kernels: [Entry] = [] }

    /// The entries, sorted by name. A missing file is an empty registry; an unreadable one throws.
    public func entries() throws -> [Entry] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        do { return try JSONDecoder().decode(File.self, from: data).kernels.sorted { $0.name < $1.name } } catch {
            throw ProvisioningError.failed(step: "read the kernel registry \(path)",
                                           detail: "\(error) — fix or delete the file (it only lists registered kernels)")
        }
    }

    public func entry(named name: String) throws -> Entry? { try entries().first { $0.name == name } }

    /// A name a kernel can be registered under: no '/', no whitespace, not empty, ≤ 64 characters.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && !name.contains("/") && name != "." && name != ".."
            && !name.unicodeScalars.contains { $0.properties.isWhitespace || $0.value < 0x20 }
    }

    /// Registers `path` (a kernel tree, bzImage or vmlinux; checked with `KernelImage.validate`)
    /// as `name` (default: the release its bzImage states, else the file or directory name).
    /// Returns the entry and the kernel it resolves to.
    @discardableResult
    public func add(path given: String, name: String? = nil) throws -> (entry: Entry, kernel: KernelArtifacts) {
        let absolute = URL(fileURLWithPath: given).standardizedFileURL.path
        let kernel = try Provisioning.kernel(atPath: absolute)
        do { try KernelImage.validate(path: kernel.image) } catch {
            throw ProvisioningError.failed(step: "register \(given)", detail: "\(error)")
        }
        let chosen = name ?? KernelRelease.fromImage(atPath: kernel.image) ?? (absolute as NSString).lastPathComponent
        guard Self.isValidName(chosen) else {
            throw ProvisioningError.failed(step: "register \(given)", detail: "'\(chosen)' is not a usable name (no '/', no spaces) — pass --name NAME")
        }
        var file = File(kernels: try entries())
        if let old = file.kernels.first(where: { $0.name == chosen }) {
            throw ProvisioningError.failed(step: "register \(given)",
                                           detail: "'\(chosen)' is already registered (\(old.path)) — `ktstr kernel remove \(chosen)` first, or pass --name")
        }
        let entry = Entry(name: chosen, path: absolute)
        file.kernels.append(entry)
        try write(file)
        return (entry, kernel)
    }

    /// Forgets `name` (the files it points at are not touched). False when it was not registered.
    @discardableResult
    public func remove(name: String) throws -> Bool {
        var file = File(kernels: try entries())
        guard file.kernels.contains(where: { $0.name == name }) else { return false }
        file.kernels.removeAll { $0.name == name }
        try write(file)
        return true
    }

    private func write(_ file: File) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try ProvisioningFiles.makeDirectory((path as NSString).deletingLastPathComponent)
        try ProvisioningFiles.writeAtomically(try enc.encode(file) + Data("\n".utf8), to: path)
    }
}

extension Provisioning {
    /// A kernel given by path: a built kernel tree (`arch/x86/boot/bzImage`, `vmlinux`,
    /// `.config`), a directory shaped like a cached kernel (`vmlinuz`, `vmlinux`, `config`),
    /// or a bzImage / vmlinux file (vmlinux and config found next to it).
    public static func kernel(atPath p: String) throws -> KernelArtifacts {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else {
            throw ProvisioningError.missing(what: "kernel \(p): no such file or directory",
                                            fix: "pass a kernel tree, a bzImage or vmlinux, or a name from `ktstr kernel list`")
        }
        guard isDir.boolValue else {
            let sibling = (p as NSString).deletingLastPathComponent + "/vmlinux"
            return KernelArtifacts(image: p, vmlinux: exists(sibling) && sibling != p ? sibling : nil,
                                   version: KernelRelease.fromImage(atPath: p), config: kernelConfig(nextTo: p))
        }
        let dir = p.hasSuffix("/") && p.count > 1 ? String(p.dropLast()) : p
        let tree = dir + "/arch/x86/boot/bzImage"
        if exists(tree) {
            return KernelArtifacts(image: tree, vmlinux: exists(dir + "/vmlinux") ? dir + "/vmlinux" : nil,
                                   version: KernelRelease.fromImage(atPath: tree),
                                   config: looksLikeKernelConfig(atPath: dir + "/.config") ? dir + "/.config" : nil)
        }
        if exists(dir + "/vmlinuz") {
            let config = [dir + "/" + kernelConfigFile, dir + "/.config"].first { looksLikeKernelConfig(atPath: $0) }
            return KernelArtifacts(image: dir + "/vmlinuz", vmlinux: exists(dir + "/vmlinux") ? dir + "/vmlinux" : nil,
                                   version: KernelRelease.fromImage(atPath: dir + "/vmlinuz"), config: config)
        }
        throw ProvisioningError.missing(what: "\(p) is a directory without arch/x86/boot/bzImage or vmlinuz",
                                        fix: "pass a built kernel tree (make bzImage), or the bzImage itself")
    }

    /// A kernel by what the user typed: an existing path (tree, file) first, then a name
    /// registered in `registry`, then a cached Debian version (`ktstr kernel fetch VERSION`).
    public static func kernel(named spec: String, registry: KernelRegistry = .default) throws -> KernelArtifacts {
        if exists(spec) || spec.contains("/") { return try kernel(atPath: spec) }
        if let e = try registry.entry(named: spec) {
            guard exists(e.path) else {
                throw ProvisioningError.missing(what: "registered kernel '\(spec)' points at \(e.path), which no longer exists",
                                                fix: "`ktstr kernel remove \(spec)`, or add it again")
            }
            return try kernel(atPath: e.path)
        }
        let dir = "\(cacheDirectory)/kernels/\(spec)"
        if exists(dir + "/vmlinuz") {
            let config = dir + "/" + kernelConfigFile
            return KernelArtifacts(image: dir + "/vmlinuz", vmlinux: exists(dir + "/vmlinux") ? dir + "/vmlinux" : nil,
                                   version: spec, config: exists(config) ? config : nil)
        }
        throw ProvisioningError.missing(what: "no kernel '\(spec)': not a path, not a registered name, not a cached version",
                                        fix: "see `ktstr kernel list`; `ktstr kernel add PATH --name \(spec)` or `ktstr kernel fetch \(spec)`")
    }
}

/// One line of `ktstr kernel list`.
public struct KernelListing: Codable, Sendable, Equatable {
    /// What `--kernel` / `.ktstr(kernel:)` accepts for it.
    public var name: String
    /// `debian` (fetched into the cache) or `registered` (`ktstr kernel add`).
    public var origin: String
    /// Where it came from: the Debian package, or the registered path.
    public var source: String
    public var image: String?
    public var vmlinux: String?
    public var config: String?
    /// The release its bzImage states (`uname -r` in the guest); nil for an ELF vmlinux.
    public var release: String?
    /// The vmlinux has a .BTF section (nil: no vmlinux).
    public var btf: Bool?
    /// Its BTF describes sched_ext (nil: no vmlinux or no BTF to tell).
    public var schedExt: Bool?
    /// A problem with the entry (missing files, not verified), if any.
    public var problem: String?
}

extension Provisioning {
    /// Every kernel `--kernel NAME` can name: the cached Debian ones, then the registered ones.
    public static func kernelListing(registry: KernelRegistry = .default) -> [KernelListing] {
        var out: [KernelListing] = cachedKernels().map { k in
            var l = describe(KernelArtifacts(image: k.image ?? k.directory + "/vmlinuz", vmlinux: k.vmlinux, version: k.version, config: k.config),
                             name: k.version, origin: "debian", source: "linux-binary-unsigned-\(k.version) (\(k.directory))")
            if k.image == nil { l.problem = "no vmlinuz — run `ktstr kernel fetch \(k.version)`" }
            else if !k.complete { l.problem = "not verified — run `ktstr kernel fetch \(k.version)`" }
            return l
        }
        let entries: [KernelRegistry.Entry]
        do { entries = try registry.entries() } catch {
            out.append(KernelListing(name: "(registry)", origin: "registered", source: registry.path, problem: "\(error)"))
            return out
        }
        for e in entries {
            do {
                out.append(describe(try kernel(atPath: e.path), name: e.name, origin: "registered", source: e.path))
            } catch {
                out.append(KernelListing(name: e.name, origin: "registered", source: e.path, problem: "\(error)"))
            }
        }
        return out
    }

    public static func describe(_ k: KernelArtifacts, name: String, origin: String, source: String) -> KernelListing {
        var btf: Bool?, schedExt: Bool?
        if let v = k.vmlinux {
            do {
                schedExt = try SchedExtSupport.present(vmlinux: v)
                btf = true
            } catch {
                btf = false
            }
        }
        return KernelListing(name: name, origin: origin, source: source, image: exists(k.image) ? k.image : nil,
                             vmlinux: k.vmlinux, config: k.config,
                             release: KernelRelease.fromImage(atPath: k.image) ?? k.version, btf: btf, schedExt: schedExt,
                             problem: k.vmlinux == nil ? "no vmlinux next to the image: sched_ext and BTF unknown, no failure dumps" : nil)
    }
}
