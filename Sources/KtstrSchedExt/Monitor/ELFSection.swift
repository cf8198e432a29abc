import Glibc
import KtstrMachine
import KtstrProtocol

/// Why a section could not be read out of an ELF file.
public enum ELFSectionError: Error, CustomStringConvertible, Equatable {
    case open(path: String, errno: Int32)
    case notELF64(String)
    case corrupt(String, why: String)
    case noSection(String, path: String)

    public var description: String {
        switch self {
        case let .open(p, e): "\(p): \(String(cString: strerror(e))) — pass the guest kernel's vmlinux (ELF)"
        case let .notELF64(p): "\(p): not a little-endian ELF64 file — pass the vmlinux ELF, not the bzImage"
        case let .corrupt(p, why): "\(p): corrupt ELF (\(why)) — re-extract the vmlinux"
        case let .noSection(s, p): "\(p): has no \(s) section — the kernel was built without it (CONFIG_DEBUG_INFO_BTF)"
        }
    }
}

/// Reads one named section of an ELF64 file with pread (the vmlinux is ~60 MB; only the
/// headers and the section are read).
public enum ELFSection {
    public static let maxSectionSize = 256 << 20

    public static func read(_ name: String, from path: String) throws(ELFSectionError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .open(path: path, errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .open(path: path, errno: errno) }
        let fileSize = UInt64(max(0, st.st_size))
        return try read(name, label: path) { (off, count) throws(ELFSectionError) in
            // Nothing is allocated for a read the file cannot satisfy.
            guard off <= fileSize, UInt64(count) <= fileSize - off else { throw .corrupt(path, why: "short read at \(off)") }
            var buf = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = buf.withUnsafeMutableBytes { raw -> Int in
                    guard let base = raw.baseAddress else { return -1 }
                    // off + count ≤ Int64.max: checked by the caller.
                    return Glibc.pread(fd, base + done, count - done, off_t(off) + off_t(done))
                }
                guard n > 0 else { throw .corrupt(path, why: "short read at \(off)") }
                done += n
            }
            return buf
        }
    }

    /// The same, from an ELF image already in memory (`label` names it in errors).
    public static func read(_ name: String, from bytes: [UInt8], label: String = "<memory>") throws(ELFSectionError) -> [UInt8] {
        try read(name, label: label) { (off, count) throws(ELFSectionError) in
            guard off <= UInt64(bytes.count), UInt64(count) <= UInt64(bytes.count) - off else {
                throw .corrupt(label, why: "short read at \(off)")
            }
            return Array(bytes[Int(off)..<Int(off) + count])
        }
    }

    /// The parser: every offset and size comes from the file and is checked before use.
    /// `source(off, count)` returns exactly `count` bytes at `off` or throws.
    static func read(_ name: String, label path: String,
                     source: (UInt64, Int) throws(ELFSectionError) -> [UInt8]) throws(ELFSectionError) -> [UInt8] {
        func pread(_ off: UInt64, _ count: Int) throws(ELFSectionError) -> [UInt8] {
            guard count >= 0, count <= maxSectionSize else { throw .corrupt(path, why: "read of \(count) bytes") }
            // A file offset past off_t's range (≥ 2^63) is corrupt, not a trap in off_t(_:).
            guard off <= UInt64(Int64.max) - UInt64(count) else { throw .corrupt(path, why: "offset 0x\(String(off, radix: 16))") }
            return try source(off, count)
        }
        let eh = ByteReader(try pread(0, 64))
        guard eh.u32(at: 0) == 0x464C_457F, eh.u8(at: 4) == 2, eh.u8(at: 5) == 1 else { throw .notELF64(path) }
        guard let shoff = eh.u64(at: 0x28), let shentsize = eh.u16(at: 0x3A), let shnum = eh.u16(at: 0x3C),
              let shstrndx = eh.u16(at: 0x3E), shentsize >= 64, shnum > 0, shstrndx < shnum
        else { throw .corrupt(path, why: "section header table") }
        // ≤ 65535 × 65535 fits an Int; pread refuses more than maxSectionSize.
        let table = ByteReader(try pread(shoff, Int(shentsize) * Int(shnum)))
        func header(_ i: Int) -> (name: UInt32, offset: UInt64, size: UInt64)? {
            let b = i * Int(shentsize)
            guard let n = table.u32(at: b), let o = table.u64(at: b + 0x18), let s = table.u64(at: b + 0x20) else { return nil }
            return (n, o, s)
        }
        guard let strHdr = header(Int(shstrndx)), strHdr.size <= UInt64(maxSectionSize) else { throw .corrupt(path, why: "section names") }
        let names = try pread(strHdr.offset, Int(strHdr.size))
        for i in 0..<Int(shnum) {
            guard let h = header(i) else { continue }
            guard BTF.string(in: names, at: h.name) == name else { continue }
            guard h.size <= UInt64(maxSectionSize) else { throw .corrupt(path, why: "\(name) is \(h.size) bytes") }
            return try pread(h.offset, Int(h.size))
        }
        throw .noSection(name, path: path)
    }
}

extension BTF {
    /// The kernel's BTF from the `.BTF` section of a vmlinux ELF.
    public static func load(vmlinux path: String) throws -> BTF {
        try BTF(bytes: ELFSection.read(".BTF", from: path))
    }
}
