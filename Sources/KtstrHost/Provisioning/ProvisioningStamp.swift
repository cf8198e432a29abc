import Foundation
#if canImport(Glibc)
import Glibc
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
#endif

/// A step's "done" marker: a small file holding the key the step was done for (inputs,
/// versions, a fingerprint of sources). A step is cached when the stamp holds the current
/// key and every output it produced still exists; anything else means "do it again".
/// Stamps are written last, by rename, so an interrupted step never looks finished.
public struct ProvisioningStamp: Sendable, Equatable {
    public var path: String

    public init(path: String) { self.path = path }

    public func isValid(key: String, outputs: [String]) -> Bool {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              text == key + "\n" else { return false }
        return outputs.allSatisfy { FileManager.default.fileExists(atPath: $0) }
    }

    public func write(key: String) throws {
        try ProvisioningFiles.writeAtomically(Data((key + "\n").utf8), to: path)
    }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// File helpers for provisioning: every final file appears by rename (never half-written).
public enum ProvisioningFiles {
    /// Writes `data` to a temporary sibling, then renames it over `path`.
    public static func writeAtomically(_ data: Data, to path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        try makeDirectory(dir)
        let tmp = "\(path).tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: data) else {
            throw ProvisioningError.failed(step: "write \(path)",
                                           detail: "cannot create \(tmp) — check permissions and free space in \(dir)")
        }
        try rename(tmp, to: path)
    }

    /// rename(2): atomic within one filesystem; replaces a file or an empty directory.
    public static func rename(_ from: String, to: String) throws {
        guard Glibc.rename(from, to) == 0 else {
            let err = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: from)
            throw ProvisioningError.failed(step: "rename \(from) to \(to)", detail: "\(err) — check permissions on \(to)")
        }
    }

    /// Copies `from` to `to` through a temporary sibling and a rename.
    public static func copyAtomically(_ from: String, to: String) throws {
        let tmp = "\(to).tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: tmp)
        do { try FileManager.default.copyItem(atPath: from, toPath: tmp) } catch {
            throw ProvisioningError.failed(step: "copy \(from)", detail: "\(error) — check free space under \(to)")
        }
        try rename(tmp, to: to)
    }

    public static func makeDirectory(_ path: String) throws {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw ProvisioningError.failed(step: "mkdir \(path)",
                                           detail: "\(error) — set KTSTR_CACHE_DIR to a writable directory")
        }
    }

    /// A fresh directory under `parent` for one step's scratch work; the caller removes it.
    public static func scratchDirectory(in parent: String, prefix: String) throws -> String {
        try makeDirectory(parent)
        var template = Array("\(parent)/\(prefix).XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buf in
            buf.baseAddress.flatMap { mkdtemp($0) }.map { String(cString: $0) }
        }
        guard let dir = made else {
            throw ProvisioningError.failed(step: "mkdtemp in \(parent)", detail: "\(String(cString: strerror(errno))) — check permissions")
        }
        return dir
    }

    public static func size(_ path: String) -> UInt64? {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value
    }

    /// FNV-1a (64-bit) over each file's path relative to `root` and its bytes, in sorted
    /// order: enough to notice that sources changed (not a security hash).
    public static func fingerprint(files: [String], root: String) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        func mix<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
            for b in bytes { h ^= UInt64(b); h = h &* 0x100000001b3 }
        }
        for file in files.sorted() {
            let rel = file.hasPrefix(root + "/") ? String(file.dropFirst(root.count + 1)) : file
            mix(rel.utf8); mix([0])
            if let data = FileManager.default.contents(atPath: file) { mix(data) } else { mix("<missing>".utf8) }
            mix([0])
        }
        return String(h, radix: 16)
    }

    /// Regular files under `dir` whose names end in one of `suffixes`, recursively.
    public static func files(under dir: String, suffixes: [String]) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: dir) else { return [] }
        var out: [String] = []
        while let rel = e.nextObject() as? String {
            if suffixes.contains(where: { rel.hasSuffix($0) }) { out.append(dir + "/" + rel) }
        }
        return out.sorted()
    }
}
