import KtstrMachine
import KtstrProtocol

/// Why a BTF blob was refused. The blob comes from guest RAM or a file: never trusted.
public enum BTFError: Error, CustomStringConvertible, Equatable {
    case truncated(what: String, offset: Int)
    case badMagic(UInt16)
    case badHeader(String)
    case unknownKind(UInt8, typeID: UInt32)
    case noSuchType(String)
    case noSuchMember(String, in: String)
    case notComposite(String)
    case bitfield(String)
    case chainTooLong(UInt32)
    case badTypeID(UInt32)

    public var description: String {
        switch self {
        case let .truncated(what, off): "BTF: \(what) runs past the end of the blob at byte \(off) — the BTF is truncated or corrupt; use the kernel's vmlinux"
        case let .badMagic(m): "BTF: magic 0x\(String(m, radix: 16)) is not 0xeb9f — not a BTF blob (wrong __start_BTF address or wrong section)"
        case let .badHeader(why): "BTF: bad header: \(why) — the blob is corrupt"
        case let .unknownKind(k, id): "BTF: type \(id) has unknown kind \(k) — this BTF is newer than the parser; update swift-ktstr"
        case let .noSuchType(n): "BTF: no type named \(n) — the guest kernel lacks it (sched_ext not built in?)"
        case let .noSuchMember(m, t): "BTF: \(t) has no member \(m) — the kernel's layout differs from what the monitor reads"
        case let .notComposite(n): "BTF: \(n) is not a struct or union"
        case let .bitfield(m): "BTF: member \(m) is a bitfield; read it with its bit offset"
        case let .chainTooLong(id): "BTF: type \(id) has a typedef/modifier chain longer than 32 — corrupt BTF"
        case let .badTypeID(id): "BTF: type id \(id) is out of range — corrupt BTF"
        }
    }
}

/// BTF kinds (`BTF_KIND_*` in include/uapi/linux/btf.h).
public enum BTFKind: UInt8, Sendable, CustomStringConvertible {
    case void = 0, int, ptr, array, `struct`, union, `enum`, fwd, typedef, volatile, const,
         restrict, `func`, funcProto, `var`, datasec, float, declTag, typeTag, enum64

    public var description: String { String(describing: self) }
    /// Kinds that only qualify or rename another type (skipped when resolving).
    var isModifier: Bool { [.typedef, .volatile, .const, .restrict, .typeTag].contains(self) }
}

/// A struct/union member, a function parameter, or an enumerator: name offsets stay
/// unresolved until asked for (vmlinux has ~1M of them).
public struct BTFMember: Sendable, Equatable {
    public let nameOffset: UInt32
    public let type: UInt32
    /// Bit offset from the start of the struct (with kind_flag: low 24 bits of the raw value).
    public let bitOffset: UInt32
    /// Bitfield width in bits; 0 for an ordinary member.
    public let bitfieldSize: UInt32
}

public struct BTFEnumerator: Sendable, Equatable {
    public let nameOffset: UInt32
    public let value: Int64
}

public struct BTFVarSection: Sendable, Equatable {
    public let type: UInt32
    public let offset: UInt32
    public let size: UInt32
}

/// One type record. `sizeOrType` is the size for INT/STRUCT/UNION/ENUM/ENUM64/DATASEC/FLOAT
/// and the referenced type id for the others.
public struct BTFType: Sendable {
    public let kind: BTFKind
    public let nameOffset: UInt32
    public let kindFlag: Bool
    public let vlen: Int
    public let sizeOrType: UInt32
    /// INT: the encoding word (encoding << 24 | offset << 16 | bits).
    public var intEncoding: UInt32 = 0
    /// ARRAY: element type, index type, element count.
    public var arrayInfo: (element: UInt32, index: UInt32, count: UInt32) = (0, 0, 0)
    /// STRUCT/UNION members; FUNC_PROTO parameters (bitOffset 0).
    public var members: [BTFMember] = []
    public var enumerators: [BTFEnumerator] = []
    public var sectionVars: [BTFVarSection] = []
    /// VAR linkage; DECL_TAG component index.
    public var extra: Int32 = 0

    public var isSignedInt: Bool { kind == .int && (intEncoding >> 24) & 1 != 0 }
}

/// The kernel's (or a BPF program's) BTF: parsed once, then queried by name.
///
/// Parsing is bounded by the blob: every record is checked against the bytes left before
/// it is read or allocated, so a truncated or hostile blob throws `BTFError`.
public struct BTF: Sendable {
    public static let magic: UInt16 = 0xEB9F

    /// Index = type id; id 0 is `void`.
    public let types: [BTFType]
    private let strings: [UInt8]
    private let byName: [String: [UInt32]]

    public init(bytes: [UInt8]) throws(BTFError) {
        let r = ByteReader(bytes)
        guard let magic = r.u16(at: 0) else { throw .truncated(what: "header", offset: 0) }
        guard magic == Self.magic else { throw .badMagic(magic) }
        guard let version = r.u8(at: 2), version == 1 else { throw .badHeader("version is not 1") }
        guard let hdrLen = r.u32(at: 4), let typeOff = r.u32(at: 8), let typeLen = r.u32(at: 12),
              let strOff = r.u32(at: 16), let strLen = r.u32(at: 20)
        else { throw .truncated(what: "header", offset: 0) }
        guard hdrLen >= 24, UInt64(hdrLen) <= UInt64(bytes.count) else { throw .badHeader("hdr_len \(hdrLen)") }
        let body = UInt64(hdrLen)
        let typeStart = body + UInt64(typeOff), typeEnd = typeStart + UInt64(typeLen)
        let strStart = body + UInt64(strOff), strEnd = strStart + UInt64(strLen)
        guard typeEnd <= UInt64(bytes.count) else { throw .truncated(what: "type section", offset: Int(clamping: typeEnd)) }
        guard strEnd <= UInt64(bytes.count) else { throw .truncated(what: "string section", offset: Int(clamping: strEnd)) }
        strings = Array(bytes[Int(strStart)..<Int(strEnd)])
        var parsed: Result<[BTFType], BTFError> = .success([])
        bytes.withUnsafeBytes { buf in
            var tr = RawReader(buf: buf, position: Int(typeStart), end: Int(typeEnd))
            do throws(BTFError) { parsed = .success(try Self.parseTypes(&tr)) } catch { parsed = .failure(error) }
        }
        types = try parsed.get()
        var index: [String: [UInt32]] = [:]
        for (id, t) in types.enumerated() where t.nameOffset != 0 {
            let n = Self.string(in: strings, at: t.nameOffset)
            if !n.isEmpty { index[n, default: []].append(UInt32(id)) }
        }
        byName = index
    }

    private static func parseTypes(_ r: inout RawReader) throws(BTFError) -> [BTFType] {
        var out: [BTFType] = [BTFType(kind: .void, nameOffset: 0, kindFlag: false, vlen: 0, sizeOrType: 0)]
        while r.remaining > 0 {
            let id = UInt32(out.count)
            guard let nameOff = r.next32(), let info = r.next32(), let st = r.next32() else {
                throw .truncated(what: "type \(id)", offset: r.position)
            }
            let rawKind = UInt8((info >> 24) & 0x7F)
            guard let kind = BTFKind(rawValue: rawKind), kind != .void else { throw .unknownKind(rawKind, typeID: id) }
            let vlen = Int(info & 0xFF_FFFF)
            var t = BTFType(kind: kind, nameOffset: nameOff, kindFlag: info >> 31 != 0, vlen: vlen, sizeOrType: st)
            // Check the trailing records fit before allocating anything sized by vlen.
            let perItem: Int = switch kind {
            case .struct, .union, .enum64, .datasec: 12
            case .enum, .funcProto: 8
            default: 0
            }
            guard perItem * vlen <= r.remaining else { throw .truncated(what: "members of type \(id)", offset: r.position) }
            switch kind {
            case .int:
                guard let enc = r.next32() else { throw .truncated(what: "int type \(id)", offset: r.position) }
                t.intEncoding = enc
            case .array:
                guard let e = r.next32(), let i = r.next32(), let n = r.next32() else { throw .truncated(what: "array type \(id)", offset: r.position) }
                t.arrayInfo = (e, i, n)
            case .struct, .union:
                t.members.reserveCapacity(vlen)
                for _ in 0..<vlen {
                    guard let n = r.next32(), let ty = r.next32(), let off = r.next32() else { throw .truncated(what: "member of \(id)", offset: r.position) }
                    t.members.append(t.kindFlag
                        ? BTFMember(nameOffset: n, type: ty, bitOffset: off & 0xFF_FFFF, bitfieldSize: off >> 24)
                        : BTFMember(nameOffset: n, type: ty, bitOffset: off, bitfieldSize: 0))
                }
            case .enum:
                for _ in 0..<vlen {
                    guard let n = r.next32(), let v = r.next32() else { throw .truncated(what: "enumerator of \(id)", offset: r.position) }
                    let value = t.kindFlag ? Int64(Int32(bitPattern: v)) : Int64(v)
                    t.enumerators.append(BTFEnumerator(nameOffset: n, value: value))
                }
            case .enum64:
                for _ in 0..<vlen {
                    guard let n = r.next32(), let lo = r.next32(), let hi = r.next32() else { throw .truncated(what: "enumerator of \(id)", offset: r.position) }
                    t.enumerators.append(BTFEnumerator(nameOffset: n, value: Int64(bitPattern: UInt64(hi) << 32 | UInt64(lo))))
                }
            case .funcProto:
                for _ in 0..<vlen {
                    guard let n = r.next32(), let ty = r.next32() else { throw .truncated(what: "parameter of \(id)", offset: r.position) }
                    t.members.append(BTFMember(nameOffset: n, type: ty, bitOffset: 0, bitfieldSize: 0))
                }
            case .var, .declTag:
                guard let x = r.next32() else { throw .truncated(what: "type \(id)", offset: r.position) }
                t.extra = Int32(bitPattern: x)
            case .datasec:
                for _ in 0..<vlen {
                    guard let ty = r.next32(), let off = r.next32(), let sz = r.next32() else { throw .truncated(what: "section var of \(id)", offset: r.position) }
                    t.sectionVars.append(BTFVarSection(type: ty, offset: off, size: sz))
                }
            case .void, .ptr, .fwd, .typedef, .volatile, .const, .restrict, .func, .float, .typeTag:
                break
            }
            out.append(t)
        }
        return out
    }

    static func string(in strings: [UInt8], at offset: UInt32) -> String {
        let start = Int(offset)
        guard start < strings.count else { return "" }
        var end = start
        while end < strings.count, strings[end] != 0 { end += 1 }
        return String(decoding: strings[start..<end], as: UTF8.self)
    }

    /// The string at `offset` in the string section ("" when out of range).
    public func string(at offset: UInt32) -> String { Self.string(in: strings, at: offset) }

    public func name(of id: UInt32) -> String {
        guard let t = type(id) else { return "" }
        return string(at: t.nameOffset)
    }

    public func type(_ id: UInt32) -> BTFType? { Int(id) < types.count ? types[Int(id)] : nil }

    /// Every type id with this name (a name can be a struct and a typedef at once).
    public func ids(named name: String) -> [UInt32] { byName[name] ?? [] }

    /// The type named `name`, of `kind` when given (else the first one).
    public func id(named name: String, kind: BTFKind? = nil) -> UInt32? {
        ids(named: name).first { kind == nil || types[Int($0)].kind == kind }
    }
}

/// The type-section reader: unaligned little-endian loads straight from the blob's buffer
/// (the vmlinux type section is ~3 MB; per-byte array reads made parsing take seconds in
/// debug builds). Every load is checked against `end` first.
struct RawReader {
    let buf: UnsafeRawBufferPointer
    var position: Int
    let end: Int

    var remaining: Int { end - position }

    mutating func next32() -> UInt32? {
        guard position >= 0, end - position >= 4, end <= buf.count else { return nil }
        let v = buf.loadUnaligned(fromByteOffset: position, as: UInt32.self)
        position += 4
        return UInt32(littleEndian: v)
    }
}
