// A small JSON value, reader and writer for plan.json and the agent channel. Hand-written
// because the guest agent links only Glibc (it runs as PID 1 in a tiny initramfs), and
// bounded because the host reads it from a hostile guest: input size and nesting depth are
// limited, malformed input yields nil, no number traps.

/// One JSON value. Objects keep their key order (the plan and messages are written in the
/// order docs/PROTOCOLS.md shows); a lookup takes the first matching key.
public enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    /// Longest input `parse` reads.
    public static let maxBytes = 1 << 20
    /// Deepest nesting `parse` accepts (the protocol needs 3).
    public static let maxDepth = 32

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case let (.bool(x), .bool(y)): x == y
        case let (.number(x), .number(y)): x == y
        case let (.string(x), .string(y)): x == y
        case let (.array(x), .array(y)): x == y
        case let (.object(x), .object(y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    public static func int(_ v: Int) -> JSON { .number(Double(v)) }
    public static func uint(_ v: UInt64) -> JSON { .number(Double(v)) }

    public subscript(key: String) -> JSON? {
        if case let .object(pairs) = self { return pairs.first { $0.0 == key }?.1 }
        return nil
    }
    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var array: [JSON]? { if case let .array(a) = self { return a }; return nil }
    public var object: [(String, JSON)]? { if case let .object(o) = self { return o }; return nil }
    /// Integral part of a number within ±9e15 (exact in a Double); nil otherwise.
    public var int: Int? {
        if case let .number(d) = self, d.isFinite, d >= -9.0e15, d <= 9.0e15 { return Int(d) }
        return nil
    }
    /// Integral part of a number within Int64's range; nil otherwise.
    public var int64: Int64? {
        if case let .number(d) = self, d.isFinite, d >= -9.2e18, d <= 9.2e18 { return Int64(d) }
        return nil
    }
    /// Integral part of a non-negative number within UInt64's range; nil otherwise.
    public var uint64: UInt64? {
        if case let .number(d) = self, d.isFinite, d >= 0, d < 1.8e19 { return UInt64(d) }
        return nil
    }
}

// MARK: reading

extension JSON {
    public static func parse(_ text: some StringProtocol) -> JSON? { parse(Array(text.utf8)) }

    /// The value `bytes` hold (surrounding white space allowed); nil for anything malformed,
    /// longer than `maxBytes` or nested deeper than `maxDepth`.
    public static func parse(_ bytes: [UInt8]) -> JSON? {
        guard bytes.count <= maxBytes else { return nil }
        var p = Parser(b: bytes)
        guard let v = p.value(depth: 0) else { return nil }
        p.skipSpace()
        return p.i == bytes.count ? v : nil
    }

    private struct Parser {
        let b: [UInt8]
        var i = 0

        mutating func skipSpace() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
        }

        func at(_ c: Character) -> Bool { i < b.count && b[i] == c.asciiValue! }

        mutating func literal(_ s: String, _ v: JSON) -> JSON? {
            let u = Array(s.utf8)
            guard i + u.count <= b.count, b[i..<i + u.count].elementsEqual(u) else { return nil }
            i += u.count
            return v
        }

        mutating func value(depth: Int) -> JSON? {
            guard depth < JSON.maxDepth else { return nil }
            skipSpace()
            guard i < b.count else { return nil }
            switch b[i] {
            case UInt8(ascii: "n"): return literal("null", .null)
            case UInt8(ascii: "t"): return literal("true", .bool(true))
            case UInt8(ascii: "f"): return literal("false", .bool(false))
            case UInt8(ascii: "\""): return string().map { .string($0) }
            case UInt8(ascii: "["):
                i += 1
                var out: [JSON] = []
                skipSpace()
                if at("]") { i += 1; return .array(out) }
                while true {
                    guard let v = value(depth: depth + 1) else { return nil }
                    out.append(v)
                    skipSpace()
                    if at(",") { i += 1; continue }
                    if at("]") { i += 1; return .array(out) }
                    return nil
                }
            case UInt8(ascii: "{"):
                i += 1
                var out: [(String, JSON)] = []
                skipSpace()
                if at("}") { i += 1; return .object(out) }
                while true {
                    skipSpace()
                    guard at("\""), let k = string() else { return nil }
                    skipSpace()
                    guard at(":") else { return nil }
                    i += 1
                    guard let v = value(depth: depth + 1) else { return nil }
                    out.append((k, v))
                    skipSpace()
                    if at(",") { i += 1; continue }
                    if at("}") { i += 1; return .object(out) }
                    return nil
                }
            default: return number()
            }
        }

        mutating func number() -> JSON? {
            let start = i
            while i < b.count, b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: ".")
                || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") || (b[i] >= 0x30 && b[i] <= 0x39) { i += 1 }
            guard i > start, i - start < 64 else { return nil }
            // "1e999" reads as infinity, which JSON cannot hold (it would re-encode as null):
            // out of range is malformed.
            guard let d = Double(String(decoding: b[start..<i], as: UTF8.self)), d.isFinite else { return nil }
            return .number(d)
        }

        mutating func hex4() -> UInt32? {
            guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<i + 4], as: UTF8.self), radix: 16) else { return nil }
            i += 4
            return v
        }

        mutating func string() -> String? {
            i += 1 // opening quote
            var out: [UInt8] = []
            while i < b.count {
                let c = b[i]
                i += 1
                if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
                if c != UInt8(ascii: "\\") { out.append(c); continue }
                guard i < b.count else { return nil }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    guard var v = hex4() else { return nil }
                    // A surrogate pair is one scalar; a lone surrogate becomes U+FFFD.
                    if (0xD800..<0xDC00).contains(v), b[i...].starts(with: Array("\\u".utf8)) {
                        let save = i
                        i += 2
                        if let lo = hex4(), (0xDC00..<0xE000).contains(lo) {
                            v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00)
                        } else { i = save }
                    }
                    out += Array(String(Unicode.Scalar(v).map(Character.init) ?? "\u{FFFD}").utf8)
                default: out.append(e)
                }
            }
            return nil
        }
    }
}

// MARK: writing

extension JSON {
    /// Compact text: no spaces, integral numbers without a fraction, control characters escaped.
    public func encoded() -> String {
        var s = ""
        write(into: &s)
        return s
    }

    private func write(into s: inout String) {
        switch self {
        case .null: s += "null"
        case let .bool(v): s += v ? "true" : "false"
        case let .number(d):
            if d.rounded() == d, abs(d) < 9.0e15 { s += String(Int64(d)) } else if d.isFinite { s += String(d) } else { s += "null" }
        case let .string(v): JSON.quote(v, into: &s)
        case let .array(a):
            s += "["
            for (k, v) in a.enumerated() { if k > 0 { s += "," }; v.write(into: &s) }
            s += "]"
        case let .object(pairs):
            s += "{"
            for (k, (key, v)) in pairs.enumerated() {
                if k > 0 { s += "," }
                JSON.quote(key, into: &s)
                s += ":"
                v.write(into: &s)
            }
            s += "}"
        }
    }

    static func quote(_ v: String, into s: inout String) {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for c in v.utf8 {
            switch c {
            case UInt8(ascii: "\""): out += [0x5C, c]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, UInt8(ascii: "n")]
            case 0x0D: out += [0x5C, UInt8(ascii: "r")]
            case 0x09: out += [0x5C, UInt8(ascii: "t")]
            case 0..<0x20, 0x7F:
                out += Array("\\u00".utf8) + [hex[Int(c >> 4)], hex[Int(c & 0xF)]]
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
        s += String(decoding: out, as: UTF8.self)
    }
}
