import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// Finds every file the dynamic loader opens to start a set of programs: the PT_INTERP loader
/// and the transitive DT_NEEDED libraries, resolved the way glibc's ld.so does (DT_RPATH of
/// the object and its loaders when it has no DT_RUNPATH, then DT_RUNPATH, then the system
/// directories), with `$ORIGIN` expanded.
///
/// Each file is placed in the guest at the path the guest's loader will try first. Objects
/// found through a directory the guest loader does not search by itself (ld.so.conf.d,
/// LD_LIBRARY_PATH) are placed in /usr/lib/x86_64-linux-gnu instead. `$ORIGIN` differs
/// between host and guest (the scheduler lives at /ktstr/bin/scheduler in the guest), so
/// every object carries both paths.
public struct SharedLibraryClosure: Sendable {
    public struct Placement: Sendable, Equatable {
        /// Where the loader will open it in the guest.
        public var guestPath: String
        /// The real file on the host (symlinks resolved).
        public var hostPath: String
    }

    public enum ResolveError: Error, CustomStringConvertible {
        case unreadable(String)
        case missingLibrary(name: String, neededBy: String, searched: [String])
        public var description: String {
            switch self {
            case let .unreadable(p): "\(p): cannot read — check that it exists and is readable"
            case let .missingLibrary(name, by, dirs):
                "\(name) (needed by \(by)) not found in \(dirs.joined(separator: ":")) — install it or set DT_RUNPATH"
            }
        }
    }

    /// Directories glibc searches without a cache, in order (Debian multiarch x86-64).
    public static let systemDirectories = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]

    public var extraDirectories: [String]
    public var ldLibraryPath: [String]
    let readFile: @Sendable (String) -> [UInt8]?
    let realPath: @Sendable (String) -> String?

    public init(extraDirectories: [String]? = nil, ldLibraryPath: [String]? = nil) {
        self.extraDirectories = extraDirectories ?? Self.ldSoConfDirectories()
        self.ldLibraryPath = ldLibraryPath ?? (ProcessInfo.processInfo.environment["LD_LIBRARY_PATH"] ?? "")
            .split(separator: ":").map(String.init)
        self.readFile = { p in FileManager.default.contents(atPath: p).map { [UInt8]($0) } }
        self.realPath = { p in
            guard let r = realpath(p, nil) else { return nil }
            defer { free(r) }
            return String(cString: r)
        }
    }

    /// Plain directory lines of /etc/ld.so.conf.d/*.conf (what ldconfig would cache).
    static func ldSoConfDirectories() -> [String] {
        let d = "/etc/ld.so.conf.d"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: d)) ?? []).filter { $0.hasSuffix(".conf") }.sorted()
        return files.flatMap { f -> [String] in
            let text = (try? String(contentsOfFile: "\(d)/\(f)", encoding: .utf8)) ?? ""
            return text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { $0.hasPrefix("/") }
        }
    }

    /// Objects to resolve: the host file and the path it will have in the guest.
    public func resolve(_ roots: [(hostPath: String, guestPath: String)]) throws -> [Placement] {
        var out: [Placement] = []
        var placed: Set<String> = []
        var loadedNames: [String: String] = [:] // needed name → guest path (ld.so loads a name once)
        struct Item { var host: String; var guest: String; var rpathChain: [(host: String, guest: String)] }
        var queue: [Item] = roots.map { Item(host: $0.hostPath, guest: Self.normalize($0.guestPath), rpathChain: []) }
        var steps = 0
        while !queue.isEmpty {
            steps += 1
            guard steps < 10_000 else { break }
            let item = queue.removeFirst()
            guard let real = realPath(item.host), let bytes = readFile(real) else { throw ResolveError.unreadable(item.host) }
            if !placed.contains(item.guest) {
                placed.insert(item.guest)
                out.append(Placement(guestPath: item.guest, hostPath: real))
            }
            let info = try ELFDynamicInfo.parse(bytes, path: item.host)
            if let interp = info.interpreter, !placed.contains(interp) {
                guard let r = realPath(interp) else { throw ResolveError.unreadable(interp) }
                placed.insert(interp)
                out.append(Placement(guestPath: interp, hostPath: r))
            }
            let hostOrigin = (item.host as NSString).deletingLastPathComponent
            let guestOrigin = (item.guest as NSString).deletingLastPathComponent
            func expand(_ dirs: [String]) -> [(host: String, guest: String)] {
                dirs.map { (Self.expandOrigin($0, origin: hostOrigin), Self.expandOrigin($0, origin: guestOrigin)) }
            }
            let ownRpath = expand(info.rpath)
            let chain = info.runpath.isEmpty ? ownRpath + item.rpathChain : []
            let runpath = expand(info.runpath)
            for name in info.needed {
                if loadedNames[name] != nil { continue }
                let found: (host: String, guest: String)?
                if name.contains("/") {
                    found = (name, name)
                } else {
                    found = search(name, rpath: chain, runpath: runpath)
                }
                guard let found else {
                    throw ResolveError.missingLibrary(name: name, neededBy: item.host,
                                                      searched: (chain + runpath).map(\.host) + Self.systemDirectories)
                }
                loadedNames[name] = found.guest
                // DT_RPATH of the loading chain applies to this object's own needs too.
                queue.append(Item(host: found.host, guest: found.guest, rpathChain: info.runpath.isEmpty ? chain : item.rpathChain))
            }
        }
        return out
    }

    /// The first candidate file that is a loadable x86-64 ELF, as (host path, guest path).
    func search(_ name: String, rpath: [(host: String, guest: String)], runpath: [(host: String, guest: String)]) -> (host: String, guest: String)? {
        let system = Self.systemDirectories.map { ($0, $0) }
        // Dirs the guest loader would not search: place what they hold in a system dir.
        let hostOnly = (ldLibraryPath + extraDirectories).map { ($0, "/usr/lib/x86_64-linux-gnu") }
        for (host, guest) in rpath + runpath + system + hostOnly {
            let candidate = host.hasSuffix("/") ? host + name : host + "/" + name
            guard let real = realPath(candidate), let bytes = readFile(real), bytes.count >= 64,
                  let info = try? ELFDynamicInfo.parse(bytes, path: candidate), info.isExecutableOrShared else { continue }
            let guestDir = guest.hasSuffix("/") ? String(guest.dropLast()) : guest
            return (candidate, Self.normalize(guestDir + "/" + name))
        }
        return nil
    }

    static func expandOrigin(_ dir: String, origin: String) -> String {
        let o = origin.isEmpty ? "/" : origin
        return normalize(dir.replacingOccurrences(of: "${ORIGIN}", with: o).replacingOccurrences(of: "$ORIGIN", with: o))
    }

    /// Lexical normalisation of an absolute guest path ("//", ".", "..").
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for c in path.split(separator: "/") where c != "." {
            if c == ".." { _ = parts.popLast() } else { parts.append(c) }
        }
        return "/" + parts.joined(separator: "/")
    }
}
