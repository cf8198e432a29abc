import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// An uncompressed newc ("070701") cpio archive, the format the kernel unpacks as initramfs.
/// A value: add entries, then take `bytes()`. Parent directories are added implicitly.
public struct Initramfs: Sendable {
    public enum Entry: Sendable, Equatable {
        case directory(mode: UInt32)
        case file(mode: UInt32, contents: [UInt8])
        case symlink(target: String)
    }

    public private(set) var entries: [(path: String, entry: Entry)] = []
    private var known: Set<String> = []

    public init() {}

    /// Adds a regular file (mode defaults to 0644; use 0o755 for programs).
    public mutating func addFile(_ path: String, contents: [UInt8], mode: UInt32 = 0o644) {
        add(path, .file(mode: mode, contents: contents))
    }

    public mutating func addDirectory(_ path: String, mode: UInt32 = 0o755) {
        add(path, .directory(mode: mode))
    }

    public mutating func addSymlink(_ path: String, target: String) {
        add(path, .symlink(target: target))
    }

    public func contains(_ path: String) -> Bool { known.contains(Self.normalize(path)) }

    private mutating func add(_ path: String, _ entry: Entry) {
        let p = Self.normalize(path)
        guard !p.isEmpty else { return }
        // Parents first: the kernel's unpacker does not create missing directories.
        var parent = ""
        for comp in p.split(separator: "/").dropLast() {
            parent = parent.isEmpty ? String(comp) : parent + "/" + comp
            if !known.contains(parent) {
                known.insert(parent)
                entries.append((parent, .directory(mode: 0o755)))
            }
        }
        if known.contains(p) {
            // Last write wins (a file replacing an earlier one with the same name).
            if case .directory = entry { return }
            entries.removeAll { $0.path == p }
        }
        known.insert(p)
        entries.append((p, entry))
    }

    static func normalize(_ path: String) -> String {
        path.split(separator: "/").filter { $0 != "." && !$0.isEmpty }.joined(separator: "/")
    }

    /// The archive, ending with the TRAILER!!! record.
    public func bytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(entries.reduce(512) { acc, e in
            if case let .file(_, c) = e.entry { return acc + c.count + 128 + e.path.utf8.count }
            return acc + 128 + e.path.utf8.count
        })
        var ino: UInt32 = 1
        for (path, entry) in entries {
            switch entry {
            case let .directory(mode):
                Self.append(&out, name: path, ino: ino, mode: 0o040000 | mode, nlink: 2, data: [])
            case let .file(mode, contents):
                Self.append(&out, name: path, ino: ino, mode: 0o100000 | mode, nlink: 1, data: contents)
            case let .symlink(target):
                Self.append(&out, name: path, ino: ino, mode: 0o120777, nlink: 1, data: Array(target.utf8))
            }
            ino += 1
        }
        Self.append(&out, name: "TRAILER!!!", ino: 0, mode: 0, nlink: 1, data: [])
        return out
    }

    private static func append(_ out: inout [UInt8], name: String, ino: UInt32, mode: UInt32, nlink: UInt32, data: [UInt8]) {
        let nameBytes = Array(name.utf8) + [0]
        let fields: [UInt32] = [ino, mode, 0, 0, nlink, 0, UInt32(data.count), 0, 0, 0, 0, UInt32(nameBytes.count), 0]
        out += Array("070701".utf8)
        for f in fields { out += hex8(f) }
        out += nameBytes
        pad4(&out)
        out += data
        pad4(&out)
    }

    private static func hex8(_ v: UInt32) -> [UInt8] {
        let digits = Array("0123456789ABCDEF".utf8)
        return (0..<8).map { i in digits[Int((v >> (28 - 4 * UInt32(i))) & 0xF)] }
    }

    private static func pad4(_ out: inout [UInt8]) {
        while out.count % 4 != 0 { out.append(0) }
    }
}

/// Reads a newc archive back (for tests and `ktstr` diagnostics). Bounds-checked: a corrupt
/// archive yields `nil`, never a crash.
public enum InitramfsReader {
    public struct Record: Equatable, Sendable {
        public var name: String
        public var mode: UInt32
        public var data: [UInt8]
    }

    public static func records(_ bytes: [UInt8]) -> [Record]? {
        var out: [Record] = []
        var i = 0
        func field(_ k: Int) -> UInt32? {
            let s = i + 6 + 8 * k
            guard s + 8 <= bytes.count else { return nil }
            return UInt32(String(decoding: bytes[s..<s + 8], as: UTF8.self), radix: 16)
        }
        while true {
            guard i + 110 <= bytes.count, bytes[i..<i + 6].elementsEqual("070701".utf8),
                  let mode = field(1), let size = field(6), let nameSize = field(11), nameSize >= 1
            else { return nil }
            let nameStart = i + 110
            guard nameStart + Int(nameSize) <= bytes.count else { return nil }
            let name = String(decoding: bytes[nameStart..<nameStart + Int(nameSize) - 1], as: UTF8.self)
            var dataStart = nameStart + Int(nameSize)
            dataStart = (dataStart + 3) & ~3
            guard dataStart + Int(size) <= bytes.count else { return nil }
            if name == "TRAILER!!!" { return out }
            out.append(Record(name: name, mode: mode, data: Array(bytes[dataStart..<dataStart + Int(size)])))
            i = (dataStart + Int(size) + 3) & ~3
        }
    }
}
