import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// What the dynamic loader needs from an ELF file: its interpreter (PT_INTERP), the libraries
/// it names (DT_NEEDED) and where it says to look (DT_RPATH / DT_RUNPATH).
///
/// Only 64-bit little-endian x86-64 files are accepted (the guest's ABI). The parser is
/// bounded: every offset and size is checked against the file, counts are capped, and a
/// corrupt file is an `ELFError`, never a crash.
public struct ELFDynamicInfo: Sendable, Equatable {
    public var interpreter: String?
    public var needed: [String]
    public var rpath: [String]
    public var runpath: [String]
    /// ET_DYN or ET_EXEC; false for relocatable objects and cores.
    public var isExecutableOrShared: Bool

    public enum ELFError: Error, CustomStringConvertible, Equatable {
        case notELF(String)
        case unsupported(String, why: String)
        case corrupt(String, why: String)

        public var description: String {
            switch self {
            case let .notELF(p): "\(p): not an ELF file — pass a compiled x86-64 binary"
            case let .unsupported(p, why): "\(p): \(why) — the guest runs x86-64 Linux binaries only"
            case let .corrupt(p, why): "\(p): corrupt ELF (\(why)) — rebuild the binary"
            }
        }
    }

    static let maxHeaders = 512
    static let maxDynamic = 4096

    public static func parse(_ b: [UInt8], path: String = "<bytes>") throws -> ELFDynamicInfo {
        guard b.count >= 64, b[0] == 0x7F, b[1] == 0x45, b[2] == 0x4C, b[3] == 0x46 else { throw ELFError.notELF(path) }
        guard b[4] == 2 else { throw ELFError.unsupported(path, why: "32-bit ELF") }
        guard b[5] == 1 else { throw ELFError.unsupported(path, why: "big-endian ELF") }
        let r = Reader(b: b, path: path)
        let type = try r.u16(16), machine = try r.u16(18)
        guard machine == 62 else { throw ELFError.unsupported(path, why: "machine \(machine) is not x86-64") }
        let phoff = try r.u64(32), phentsize = Int(try r.u16(54)), phnum = Int(try r.u16(56))
        guard phnum <= maxHeaders else { throw ELFError.corrupt(path, why: "\(phnum) program headers") }
        guard phnum == 0 || phentsize >= 56 else { throw ELFError.corrupt(path, why: "program header size \(phentsize)") }

        struct Load { var vaddr: UInt64; var offset: UInt64; var filesz: UInt64 }
        var loads: [Load] = []
        var interp: String?
        var dynamic: (offset: UInt64, size: UInt64)?
        for i in 0..<phnum {
            let h = try r.offset(phoff, plus: UInt64(i * phentsize), length: 56)
            let ptype = try r.u32(h), off = try r.u64(h + 8), vaddr = try r.u64(h + 16), filesz = try r.u64(h + 32)
            switch ptype {
            case 1: loads.append(Load(vaddr: vaddr, offset: off, filesz: filesz))
            case 2: dynamic = (off, filesz)
            case 3:
                let s = try r.offset(off, plus: 0, length: Int(min(filesz, 4096)))
                interp = try r.cString(at: s, limit: Int(min(filesz, 4096)))
            default: break
            }
        }

        var info = ELFDynamicInfo(interpreter: interp, needed: [], rpath: [], runpath: [],
                                  isExecutableOrShared: type == 2 || type == 3)
        guard let dynamic else { return info }
        // Dynamic entries refer to the string table by virtual address: map it through PT_LOAD.
        let count = Int(min(dynamic.size / 16, UInt64(maxDynamic)))
        var strtabAddr: UInt64?, strsz: UInt64 = 0
        var neededOffs: [UInt64] = [], rpathOff: UInt64?, runpathOff: UInt64?
        for i in 0..<count {
            let e = try r.offset(dynamic.offset, plus: UInt64(i * 16), length: 16)
            let tag = try r.u64(e), val = try r.u64(e + 8)
            switch tag {
            case 0: break
            case 1: neededOffs.append(val)
            case 5: strtabAddr = val
            case 10: strsz = val
            case 15: rpathOff = val
            case 29: runpathOff = val
            default: continue
            }
            if tag == 0 { break }
        }
        guard let strtabAddr else {
            if neededOffs.isEmpty { return info }
            throw ELFError.corrupt(path, why: "DT_NEEDED without DT_STRTAB")
        }
        guard let seg = loads.first(where: { strtabAddr >= $0.vaddr && strtabAddr - $0.vaddr < $0.filesz }) else {
            throw ELFError.corrupt(path, why: "string table address 0x\(String(strtabAddr, radix: 16)) is outside every segment")
        }
        let strtabOff = seg.offset &+ (strtabAddr - seg.vaddr)
        let limit = Int(min(strsz == 0 ? 1 << 20 : strsz, 1 << 24))
        func str(_ o: UInt64) throws -> String {
            guard o < UInt64(limit) else { throw ELFError.corrupt(path, why: "string offset \(o) beyond DT_STRSZ") }
            let p = try r.offset(strtabOff, plus: o, length: 1)
            return try r.cString(at: p, limit: min(4096, limit - Int(o)))
        }
        info.needed = try neededOffs.map(str)
        info.rpath = try rpathOff.map { try str($0).split(separator: ":").map(String.init) } ?? []
        info.runpath = try runpathOff.map { try str($0).split(separator: ":").map(String.init) } ?? []
        return info
    }

    private struct Reader {
        let b: [UInt8]
        let path: String

        /// base + plus, checked so that [result, result+length) is inside the file.
        func offset(_ base: UInt64, plus: UInt64, length: Int) throws -> Int {
            let (sum, o) = base.addingReportingOverflow(plus)
            guard !o, length >= 0, sum <= UInt64(b.count), UInt64(length) <= UInt64(b.count) - sum else {
                throw ELFError.corrupt(path, why: "offset 0x\(String(base, radix: 16))+\(plus) length \(length) beyond the file (\(b.count) bytes)")
            }
            return Int(sum)
        }
        func u16(_ o: Int) throws -> UInt16 {
            let i = try offset(UInt64(o), plus: 0, length: 2)
            return UInt16(b[i]) | UInt16(b[i + 1]) << 8
        }
        func u32(_ o: Int) throws -> UInt32 {
            let i = try offset(UInt64(o), plus: 0, length: 4)
            return (0..<4).reduce(0) { $0 | UInt32(b[i + $1]) << (8 * UInt32($1)) }
        }
        func u64(_ o: Int) throws -> UInt64 {
            let i = try offset(UInt64(o), plus: 0, length: 8)
            return (0..<8).reduce(0) { $0 | UInt64(b[i + $1]) << (8 * UInt64($1)) }
        }
        func cString(at o: Int, limit: Int) throws -> String {
            var e = o
            while e < b.count, e - o < limit, b[e] != 0 { e += 1 }
            guard e < b.count, b[e] == 0 else { throw ELFError.corrupt(path, why: "unterminated string at 0x\(String(o, radix: 16))") }
            return String(decoding: b[o..<e], as: UTF8.self)
        }
    }
}
