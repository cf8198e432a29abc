/// Reading a newc ("070701") cpio archive, the format of the initramfs and of a plan
/// request's files. Foundation-free (the agent unpacks with it) and bounds-checked: a corrupt
/// or hostile archive yields an error, never a crash or a read past the buffer.
public enum NewcArchive {
    /// One record as stored: the name as written, the full mode word, where its data lies.
    public struct Record: Sendable, Equatable {
        public var name: String
        public var mode: UInt32
        public var data: Range<Int>
    }

    /// One record to unpack: a path made safe (relative, no `..`, no empty or `.` parts).
    public struct Entry: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            case directory
            case file
            case symlink(target: String)
        }
        /// Path components below the root, e.g. ["ktstr", "plan.json"].
        public var components: [String]
        public var kind: Kind
        /// Permission bits (0o7777 of the mode).
        public var permissions: UInt32
        public var data: Range<Int>
        public var path: String { "/" + components.joined(separator: "/") }
    }

    public enum ArchiveError: Error, Equatable, CustomStringConvertible {
        case truncated(offset: Int)
        case badMagic(offset: Int)
        case badField(offset: Int)
        case tooManyRecords
        case unsafePath(String)
        case unsupportedType(String, mode: UInt32)
        public var description: String {
            switch self {
            case let .truncated(o): "archive: truncated at byte \(o)"
            case let .badMagic(o): "archive: no 070701 record at byte \(o)"
            case let .badField(o): "archive: a header field at byte \(o) is not hex"
            case .tooManyRecords: "archive: more than \(NewcArchive.maxRecords) records"
            case let .unsafePath(p): "archive: unsafe path '\(p)' (absolute escape or '..')"
            case let .unsupportedType(p, m): "archive: '\(p)' has mode \(String(m, radix: 8)): only files, directories and symlinks"
            }
        }
    }

    public static let maxRecords = 100_000
    public static let maxNameBytes = 4096
    static let headerBytes = 110
    static let trailer = "TRAILER!!!"

    /// Every record up to the trailer (a missing trailer is `truncated`).
    public static func records(_ b: [UInt8]) -> Result<[Record], ArchiveError> {
        var out: [Record] = []
        var i = 0
        while true {
            guard out.count <= maxRecords else { return .failure(.tooManyRecords) }
            guard b.count - i >= headerBytes else { return .failure(.truncated(offset: i)) }
            guard b[i..<i + 6].elementsEqual("070701".utf8) else { return .failure(.badMagic(offset: i)) }
            guard let mode = hex(b, i + 6 + 8), let size = hex(b, i + 6 + 8 * 6), let nameSize = hex(b, i + 6 + 8 * 11)
            else { return .failure(.badField(offset: i)) }
            guard nameSize >= 1, nameSize <= UInt32(maxNameBytes) else { return .failure(.badField(offset: i)) }
            let nameStart = i + headerBytes
            guard b.count - nameStart >= Int(nameSize) else { return .failure(.truncated(offset: nameStart)) }
            let name = String(decoding: b[nameStart..<nameStart + Int(nameSize) - 1], as: UTF8.self)
            let dataStart = align4(nameStart + Int(nameSize))
            // Sizes are 32-bit, the buffer is in memory: compare as Int, no overflow on 64-bit.
            guard dataStart <= b.count, b.count - dataStart >= Int(size) else { return .failure(.truncated(offset: dataStart)) }
            if name == trailer { return .success(out) }
            out.append(Record(name: name, mode: mode, data: dataStart..<dataStart + Int(size)))
            i = align4(dataStart + Int(size))
        }
    }

    /// The records as entries to unpack, paths checked: an absolute name is taken relative to
    /// the root ("/ktstr/x" and "ktstr/x" alike); "." parts are dropped; ".." anywhere, a NUL,
    /// or a component over 255 bytes is refused. The root itself ("." or "/") is skipped.
    public static func entries(_ b: [UInt8]) -> Result<[Entry], ArchiveError> {
        let recs: [Record]
        switch records(b) {
        case let .failure(e): return .failure(e)
        case let .success(r): recs = r
        }
        var out: [Entry] = []
        out.reserveCapacity(recs.count)
        for r in recs {
            guard let parts = safeComponents(r.name) else { return .failure(.unsafePath(r.name)) }
            if parts.isEmpty { continue }
            let kind: Entry.Kind
            switch r.mode & 0o170000 {
            case 0o040000: kind = .directory
            case 0o100000: kind = .file
            case 0o120000:
                let target = String(decoding: b[r.data], as: UTF8.self)
                guard !target.isEmpty, !target.utf8.contains(0) else { return .failure(.unsafePath(r.name)) }
                kind = .symlink(target: target)
            default: return .failure(.unsupportedType(r.name, mode: r.mode))
            }
            out.append(Entry(components: parts, kind: kind, permissions: r.mode & 0o7777, data: r.data))
        }
        return .success(out)
    }

    /// nil when the path must not be unpacked.
    public static func safeComponents(_ name: String) -> [String]? {
        guard !name.utf8.contains(0) else { return nil }
        var parts: [String] = []
        for c in name.split(separator: "/", omittingEmptySubsequences: true) {
            if c == "." { continue }
            guard c != "..", c.utf8.count <= 255 else { return nil }
            parts.append(String(c))
        }
        return parts
    }

    private static func align4(_ n: Int) -> Int { (n + 3) & ~3 }

    /// An 8-digit hex field (either case); nil for anything else.
    private static func hex(_ b: [UInt8], _ at: Int) -> UInt32? {
        var v: UInt32 = 0
        for k in at..<at + 8 {
            let c = b[k]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x41...0x46: d = c - 0x41 + 10
            case 0x61...0x66: d = c - 0x61 + 10
            default: return nil
            }
            v = v << 4 | UInt32(d)
        }
        return v
    }
}
