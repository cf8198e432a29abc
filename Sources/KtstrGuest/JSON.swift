// A small JSON reader/writer for the plan and the channel messages. The agent avoids
// Foundation (it runs as PID 1 in a tiny initramfs), so this is hand-written and bounded:
// nesting depth and input size are limited, malformed input yields nil.
import Glibc

enum JSON: Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func == (a: JSON, b: JSON) -> Bool {
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

    subscript(key: String) -> JSON? {
        if case let .object(pairs) = self { return pairs.first { $0.0 == key }?.1 }
        return nil
    }
    var string: String? { if case let .string(s) = self { return s }; return nil }
    var int: Int? {
        if case let .number(d) = self, d.isFinite, d >= -9.0e15, d <= 9.0e15 { return Int(d) }
        return nil
    }
    var array: [JSON]? { if case let .array(a) = self { return a }; return nil }

    // MARK: parsing

    static func parse(_ bytes: [UInt8]) -> JSON? {
        guard bytes.count <= 1 << 20 else { return nil }
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

        mutating func literal(_ s: String, _ v: JSON) -> JSON? {
            let u = Array(s.utf8)
            guard i + u.count <= b.count, Array(b[i..<i + u.count]) == u else { return nil }
            i += u.count
            return v
        }

        mutating func value(depth: Int) -> JSON? {
            guard depth < 32 else { return nil }
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
                if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
                while true {
                    guard let v = value(depth: depth + 1) else { return nil }
                    out.append(v)
                    skipSpace()
                    guard i < b.count else { return nil }
                    if b[i] == UInt8(ascii: ",") { i += 1; continue }
                    if b[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
                    return nil
                }
            case UInt8(ascii: "{"):
                i += 1
                var out: [(String, JSON)] = []
                skipSpace()
                if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
                while true {
                    skipSpace()
                    guard i < b.count, b[i] == UInt8(ascii: "\""), let k = string() else { return nil }
                    skipSpace()
                    guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
                    i += 1
                    guard let v = value(depth: depth + 1) else { return nil }
                    out.append((k, v))
                    skipSpace()
                    guard i < b.count else { return nil }
                    if b[i] == UInt8(ascii: ",") { i += 1; continue }
                    if b[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
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
            let s = String(decoding: b[start..<i], as: UTF8.self)
            return Double(s).map { .number($0) }
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
                    guard i + 4 <= b.count, let v = UInt32(String(decoding: b[i..<i + 4], as: UTF8.self), radix: 16) else { return nil }
                    i += 4
                    // Surrogates are replaced: the plan is ASCII in practice.
                    out += Array(String(Unicode.Scalar(v).map { Character($0) } ?? "\u{FFFD}").utf8)
                default: out.append(e)
                }
            }
            return nil
        }
    }

    // MARK: writing

    func encoded() -> String {
        var s = ""
        write(into: &s)
        return s
    }

    private func write(into s: inout String) {
        switch self {
        case .null: s += "null"
        case let .bool(v): s += v ? "true" : "false"
        case let .number(d):
            if d.rounded() == d, abs(d) < 9.0e15 { s += String(Int64(d)) } else { s += String(d) }
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

extension JSON {
    static func int(_ v: Int) -> JSON { .number(Double(v)) }
    static func uint(_ v: UInt64) -> JSON { .number(Double(v)) }
}
