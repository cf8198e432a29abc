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
        func pread(_ off: UInt64, _ count: Int) throws(ELFSectionError) -> [UInt8] {
            guard count >= 0, count <= maxSectionSize else { throw .corrupt(path, why: "read of \(count) bytes") }
            var buf = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = buf.withUnsafeMutableBytes { raw -> Int in
                    guard let base = raw.baseAddress else { return -1 }
                    return Glibc.pread(fd, base + done, count - done, off_t(off) + off_t(done))
                }
                guard n > 0 else { throw .corrupt(path, why: "short read at \(off)") }
                done += n
            }
            return buf
        }
        let eh = ByteReader(try pread(0, 64))
        guard eh.u32(at: 0) == 0x464C_457F, eh.u8(at: 4) == 2, eh.u8(at: 5) == 1 else { throw .notELF64(path) }
        guard let shoff = eh.u64(at: 0x28), let shentsize = eh.u16(at: 0x3A), let shnum = eh.u16(at: 0x3C),
              let shstrndx = eh.u16(at: 0x3E), shentsize >= 64, shnum > 0, shstrndx < shnum
        else { throw .corrupt(path, why: "section header table") }
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
