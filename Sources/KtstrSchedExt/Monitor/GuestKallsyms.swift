import KtstrMachine
import KtstrProtocol

/// Symbolizes kernel addresses with the kernel's own compressed kallsyms tables, read out of
/// guest RAM (the way `kallsyms_lookup` does it inside the kernel).
///
/// Why: the default kernel's vmlinux is stripped and shipping all of /proc/kallsyms over the
/// agent channel costs megabytes; the tables are in the image's rodata, immutable after
/// boot, and six symbol addresses from the hello locate them. Lookup cost is bounded: a
/// binary search over `kallsyms_offsets` and at most 255 skipped names.
public struct GuestKallsyms: Sendable, Symbolizer {
    public static let symbolNames = [
        "kallsyms_num_syms", "kallsyms_names", "kallsyms_markers",
        "kallsyms_token_table", "kallsyms_token_index", "kallsyms_offsets",
    ]
    static let maxSymbols: UInt32 = 4_000_000
    static let maxNameLength = 512

    let space: KernelAddressSpace
    let count: Int
    let names: UInt64, markers: UInt64, offsets: UInt64
    let tokens: [[UInt8]]
    /// Kernels before the PC-relative table (6.x up to ~6.14) store offsets from
    /// `kallsyms_relative_base` (x86-64: "absolute percpu": negative entries count down
    /// from base - 1); 7.x stores `target - &kallsyms_offsets[i]`. nil = PC-relative.
    let relativeBase: UInt64?

    /// nil when a table symbol is missing or the tables do not look sane.
    public init?(symbols: [String: UInt64], space: KernelAddressSpace) {
        guard let numSyms = symbols["kallsyms_num_syms"], let names = symbols["kallsyms_names"],
              let markers = symbols["kallsyms_markers"], let table = symbols["kallsyms_token_table"],
              let index = symbols["kallsyms_token_index"], let offsets = symbols["kallsyms_offsets"],
              let n = try? space.read(UInt32.self, at: numSyms), n > 0, n <= Self.maxSymbols,
              let idx = try? space.readBytes(at: index, count: 512)
        else { return nil }
        var tokens: [[UInt8]] = []
        for i in 0..<256 {
            let off = UInt64(idx[2 * i]) | UInt64(idx[2 * i + 1]) << 8
            // `table` comes from the guest's hello: wrap, and let the read refuse a bad address.
            guard let t = try? space.readCString(at: table &+ off, maxLength: 64) else { return nil }
            tokens.append(Array(t.utf8))
        }
        self.space = space
        self.count = Int(n)
        self.names = names; self.markers = markers; self.offsets = offsets
        self.tokens = tokens
        if let rb = symbols["kallsyms_relative_base"] {
            guard let base = try? space.readPointer(at: rb) else { return nil }
            relativeBase = base
        } else {
            relativeBase = nil
        }
    }

    func address(_ i: Int) throws(AddressError) -> UInt64 {
        let slot = offsets &+ UInt64(i) * 4
        let rel = Int32(bitPattern: try space.read(UInt32.self, at: slot))
        if let base = relativeBase {
            return rel >= 0 ? UInt64(rel) : base &- 1 &- UInt64(bitPattern: Int64(rel))
        }
        return slot &+ UInt64(bitPattern: Int64(rel))
    }

    /// Name (without the type character) of symbol `i`.
    func name(_ i: Int) throws(AddressError) -> String {
        var off = UInt64(try space.read(UInt32.self, at: markers &+ UInt64(i >> 8) * 4))
        for _ in 0..<(i & 0xFF) {
            let (len, hdr) = try length(at: off)
            off += UInt64(len + hdr) // < 2^32 + 255 × 2^15: no overflow
        }
        let (len, hdr) = try length(at: off)
        let data = try space.readBytes(at: names &+ off &+ UInt64(hdr), count: len)
        var out: [UInt8] = []
        for b in data { out += tokens[Int(b)]; if out.count > Self.maxNameLength { break } }
        return String(decoding: out.dropFirst().prefix(Self.maxNameLength), as: UTF8.self)
    }

    private func length(at off: UInt64) throws(AddressError) -> (Int, Int) {
        let b0: UInt8 = try space.read(at: names &+ off)
        guard b0 & 0x80 != 0 else { return (Int(b0), 1) }
        let b1: UInt8 = try space.read(at: names &+ off &+ 1)
        return (Int(b0 & 0x7F) | Int(b1) << 7, 2)
    }

    public func lookup(_ address: UInt64) throws(AddressError) -> (name: String, offset: UInt64)? {
        guard count > 0, try self.address(0) <= address else { return nil }
        var low = 0, high = count
        while high - low > 1 {
            let mid = low + (high - low) / 2
            if try self.address(mid) <= address { low = mid } else { high = mid }
        }
        let start = try self.address(low)
        // Re-read from guest RAM: a guest that rewrote its table since the search may have
        // moved it above `address`.
        guard start <= address else { return nil }
        var first = low
        var steps = 0
        while first > 0, steps < 64, try self.address(first - 1) == start { first -= 1; steps += 1 }
        // A gap of more than maxSymbolSize after the last symbol is not "inside" it.
        var end: UInt64?
        var j = low + 1
        while j < count, j < low + 64 {
            let a = try self.address(j)
            if a > start { end = a; break }
            j += 1
        }
        let off = address - start
        if let end, address >= end { return nil }
        guard off < KernelSymbols.maxSymbolSize else { return nil }
        return (try name(first), off)
    }

    public func symbolize(_ address: UInt64) -> String? {
        guard let (n, off) = try? lookup(address) else { return nil }
        return "\(n)+0x\(String(off, radix: 16))"
    }
}
