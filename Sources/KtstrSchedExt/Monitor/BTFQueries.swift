import KtstrMachine
import KtstrProtocol

/// Where a member lives and what it is, after following a dotted path.
public struct BTFField: Sendable, Equatable {
    /// Byte offset from the start of the outermost struct.
    public let offset: Int
    /// The member's declared type id (typedefs not resolved).
    public let type: UInt32
    /// Size in bytes of the member's resolved type.
    public let size: Int
}

extension BTF {
    /// Follows typedef/volatile/const/restrict/type_tag to the underlying type (bounded).
    public func resolve(_ id: UInt32) throws(BTFError) -> UInt32 {
        var cur = id
        for _ in 0..<32 {
            guard let t = type(cur) else { throw .badTypeID(cur) }
            guard t.kind.isModifier else { return cur }
            cur = t.sizeOrType
        }
        throw .chainTooLong(id)
    }

    /// Size in bytes of a type (pointers are 8 bytes: x86-64 kernel BTF).
    public func size(of id: UInt32) throws(BTFError) -> Int {
        try size(of: id, depth: 0)
    }

    private func size(of id: UInt32, depth: Int) throws(BTFError) -> Int {
        guard depth < 32 else { throw .chainTooLong(id) }
        let rid = try resolve(id)
        guard let t = type(rid) else { throw .badTypeID(rid) }
        switch t.kind {
        case .int, .struct, .union, .enum, .enum64, .datasec, .float: return Int(t.sizeOrType)
        case .ptr: return 8
        case .array:
            let e = try size(of: t.arrayInfo.element, depth: depth + 1)
            let (p, o) = e.multipliedReportingOverflow(by: Int(t.arrayInfo.count))
            guard !o else { throw .badHeader("array \(rid) size overflows") }
            return p
        case .var: return try size(of: t.sizeOrType, depth: depth + 1)
        default: return 0
        }
    }

    public func size(ofTypeNamed name: String) throws(BTFError) -> Int {
        guard let id = compositeID(named: name) else { throw .noSuchType(name) }
        return try size(of: id)
    }

    /// The struct or union called `name` (a complete one, not a FWD), or a typedef of one.
    public func compositeID(named name: String) -> UInt32? {
        for id in ids(named: name) {
            guard let rid = try? resolve(id), let t = type(rid) else { continue }
            if t.kind == .struct || t.kind == .union { return rid }
        }
        return nil
    }

    /// A member of a struct/union by name, searching anonymous struct/union members too
    /// (`struct bpf_array`'s `value` lives in an anonymous union). Offset is in bits.
    public func member(_ name: String, in id: UInt32) throws(BTFError) -> (bitOffset: UInt64, member: BTFMember)? {
        var budget = Self.maxAnonymousVisits
        return try member(name, in: id, depth: 0, budget: &budget)
    }

    /// Most anonymous struct/union members one lookup descends into: a hostile BTF whose
    /// struct holds thousands of anonymous members of its own type would otherwise cost
    /// thousands^8 steps.
    static let maxAnonymousVisits = 4096

    private func member(_ name: String, in id: UInt32, depth: Int,
                        budget: inout Int) throws(BTFError) -> (bitOffset: UInt64, member: BTFMember)? {
        guard depth < 8, budget > 0 else { return nil }
        budget -= 1
        let rid = try resolve(id)
        guard let t = type(rid), t.kind == .struct || t.kind == .union else { throw .notComposite(self.name(of: rid)) }
        for m in t.members where m.nameOffset != 0 && string(at: m.nameOffset) == name {
            return (UInt64(m.bitOffset), m)
        }
        for m in t.members where m.nameOffset == 0 {
            guard let inner = try? resolve(m.type), let it = type(inner), it.kind == .struct || it.kind == .union else { continue }
            if let (off, found) = try member(name, in: inner, depth: depth + 1, budget: &budget) {
                return (UInt64(m.bitOffset) + off, found)
            }
        }
        return nil
    }

    /// A member reached by a dotted path (`"scx.nr_running"` in `rq`, `"idr_rt.xa_head"` in
    /// `idr`). Every step must be an embedded struct/union (no pointer hops); the final
    /// member must not be a bitfield.
    public func field(_ path: String, in structName: String) throws(BTFError) -> BTFField {
        guard let root = compositeID(named: structName) else { throw .noSuchType("struct \(structName)") }
        return try field(path, in: root, displayName: structName)
    }

    public func field(_ path: String, in root: UInt32, displayName: String? = nil) throws(BTFError) -> BTFField {
        var current = root
        var bits: UInt64 = 0
        var last: BTFMember?
        let label = displayName ?? name(of: root)
        for part in path.split(separator: ".") {
            guard let (off, m) = try member(String(part), in: current) else { throw .noSuchMember(path, in: label) }
            bits += off
            last = m
            current = m.type
        }
        guard let m = last else { throw .noSuchMember(path, in: label) }
        guard m.bitfieldSize == 0, bits % 8 == 0 else { throw .bitfield(path) }
        return BTFField(offset: Int(bits / 8), type: m.type, size: try size(of: m.type))
    }

    /// Shorthand: the byte offset of `path` in `structName`.
    public func offset(of path: String, in structName: String) throws(BTFError) -> Int {
        try field(path, in: structName).offset
    }

    /// Enumerators of `enum name` (ENUM or ENUM64) as value → enumerator name.
    public func enumValues(_ name: String) throws(BTFError) -> [Int64: String] {
        guard let id = ids(named: name).first(where: { [.enum, .enum64].contains(types[Int($0)].kind) }),
              let t = type(id) else { throw .noSuchType("enum \(name)") }
        var out: [Int64: String] = [:]
        for e in t.enumerators { out[e.value] = string(at: e.nameOffset) }
        return out
    }

    /// The value of one enumerator, searching every enum (`SCX_EXIT_ERROR_STALL`).
    public func enumerator(_ name: String) -> Int64? {
        for t in types where t.kind == .enum || t.kind == .enum64 {
            for e in t.enumerators where string(at: e.nameOffset) == name { return e.value }
        }
        return nil
    }

    /// Every enumerator whose name starts with `prefix` (`SCX_EFLAG_`), over all enums.
    public func enumerators(withPrefix prefix: String) -> [(name: String, value: Int64)] {
        var out: [(String, Int64)] = []
        let first = prefix.utf8.first
        for t in types where t.kind == .enum || t.kind == .enum64 {
            for e in t.enumerators {
                // Cheap first-byte filter before decoding the name.
                let n = string(at: e.nameOffset)
                if n.utf8.first == first, n.hasPrefix(prefix) { out.append((n, e.value)) }
            }
        }
        return out
    }

    /// Variables of a DATASEC (`.bss` of a BPF object): name, byte offset, size, type.
    public func sectionVariables(_ datasec: UInt32) -> [(name: String, offset: Int, size: Int, type: UInt32)] {
        guard let t = type(datasec), t.kind == .datasec else { return [] }
        return t.sectionVars.map { v in
            let varType = type(v.type)
            let name = varType.map { string(at: $0.nameOffset) } ?? ""
            let inner = varType?.kind == .var ? varType?.sizeOrType ?? v.type : v.type
            return (name, Int(v.offset), Int(v.size), inner)
        }
    }
}
