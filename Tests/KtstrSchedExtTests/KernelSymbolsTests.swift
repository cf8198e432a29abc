import Testing
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct KernelSymbolsTests {
    @Test func systemMapParsingAndSymbolization() {
        let map = """
        ffffffff81000000 T _text
        ffffffff81000100 t helper
        ffffffff81000200 T scx_bpf_error_bstr
        ffffffff81000200 T alias_of_error
        ffffffff82000000 D scx_root
        0000000000000000 T hidden
        garbage line
        ffffffff81001000 T mod_func\t[ext4]
        """
        let s = KernelSymbols(systemMap: map)
        #expect(s["scx_root"] == 0xFFFF_FFFF_8200_0000)
        #expect(s["hidden"] == nil)
        #expect(s.symbolize(0xFFFF_FFFF_8100_0105) == "helper+0x5")
        #expect(s.symbolize(0xFFFF_FFFF_8100_0200)?.hasSuffix("+0x0") == true)
        #expect(s.symbolize(0xFFFF_FFFF_80FF_FFFF) == nil)
        #expect(s.symbolize(0xFFFF_FFFF_8100_1000 + (2 << 20)) == nil) // far past the last symbol
        // The hello's handful of addresses never symbolizes.
        #expect(!KernelSymbols(addresses: ["scx_root": 1]).canSymbolize)
    }

    /// Lays out a miniature of the kernel's compressed kallsyms tables in the image region.
    static func guestTables() throws -> (KernelAddressSpace, [String: UInt64], [(UInt64, String)]) {
        let mem = try GuestMemory.anonymous(layout: [(0, 48 << 20)])
        let space = KernelAddressSpace(memory: mem, physBase: 0, pageOffsetBase: nil, walker: nil)
        let (sym, syms) = try writeTables(mem, at: 0xFFFF_FFFF_8200_0000)
        return (space, sym, syms)
    }

    /// Symbols fnN at 0xffffffff81000000 + N*0x100 (N < 300), then sched_x/alias, then LLL...
    static func writeTables(_ mem: GuestMemory, at k: UInt64) throws -> ([String: UInt64], [(UInt64, String)]) {
        func gpa(_ kva: UInt64) -> UInt64 { kva - KernelAddressSpace.startKernelMap }
        let sym: [String: UInt64] = [
            "kallsyms_num_syms": k, "kallsyms_token_index": k + 0x100, "kallsyms_token_table": k + 0x400,
            "kallsyms_names": k + 0x1000, "kallsyms_markers": k + 0x8000, "kallsyms_offsets": k + 0x9000,
        ]
        // Tokens: byte b < 0x80 is the character b; 0x80 = "sch", 0x81 = "ed_".
        var table: [UInt8] = [], index: [UInt8] = []
        for b in 0..<256 {
            index += [UInt8(table.count & 0xFF), UInt8(table.count >> 8)]
            switch b {
            case 0x80: table += Array("sch".utf8)
            case 0x81: table += Array("ed_".utf8)
            case 1..<0x80: table.append(UInt8(b))
            default: table.append(UInt8(ascii: "?"))
            }
            table.append(0)
        }
        var syms: [(UInt64, [UInt8])] = []
        for i in 0..<300 { syms.append((0xFFFF_FFFF_8100_0000 + UInt64(i) * 0x100, Array("Tfn\(i)".utf8))) }
        syms.append((0xFFFF_FFFF_8100_0000 + 300 * 0x100, [UInt8(ascii: "t"), 0x80, 0x81, UInt8(ascii: "x")]))
        syms.append((0xFFFF_FFFF_8100_0000 + 300 * 0x100, Array("Talias".utf8)))
        let long = [UInt8(ascii: "T")] + Array(repeating: UInt8(ascii: "L"), count: 200) // two-byte length
        syms.append((0xFFFF_FFFF_8100_0000 + 302 * 0x100, long))
        var names: [UInt8] = [], markers: [UInt8] = [], offsets: [UInt8] = []
        for (i, (addr, n)) in syms.enumerated() {
            if i & 0xFF == 0 { markers += withUnsafeBytes(of: UInt32(names.count).littleEndian, Array.init) }
            names += n.count > 0x7F ? [UInt8(n.count & 0x7F) | 0x80, UInt8(n.count >> 7)] : [UInt8(n.count)]
            names += n
            let slot = sym["kallsyms_offsets"]! + UInt64(i) * 4
            let rel = Int32(Int64(bitPattern: addr &- slot))
            offsets += withUnsafeBytes(of: rel.littleEndian, Array.init)
        }
        try mem.write(UInt32(syms.count), at: gpa(k))
        try mem.write(index, at: gpa(sym["kallsyms_token_index"]!))
        try mem.write(table, at: gpa(sym["kallsyms_token_table"]!))
        try mem.write(names, at: gpa(sym["kallsyms_names"]!))
        try mem.write(markers, at: gpa(sym["kallsyms_markers"]!))
        try mem.write(offsets, at: gpa(sym["kallsyms_offsets"]!))
        return (sym, syms.map { ($0.0, String(decoding: $0.1, as: UTF8.self)) })
    }

    @Test func guestKallsymsDecodesTheKernelsCompressedTable() throws {
        let (space, sym, _) = try Self.guestTables()
        let g = try #require(GuestKallsyms(symbols: sym, space: space))
        #expect(g.symbolize(0xFFFF_FFFF_8100_0000) == "fn0+0x0")
        #expect(g.symbolize(0xFFFF_FFFF_8100_0000 + 7 * 0x100 + 0x42) == "fn7+0x42")
        #expect(g.symbolize(0xFFFF_FFFF_8100_0000 + 299 * 0x100 + 1) == "fn299+0x1") // past marker 1
        // Aliases resolve to the first symbol; token expansion; type char stripped.
        #expect(g.symbolize(0xFFFF_FFFF_8100_0000 + 300 * 0x100 + 8) == "sched_x+0x8")
        #expect(g.symbolize(0xFFFF_FFFF_8100_0000 + 302 * 0x100) == String(repeating: "L", count: 200) + "+0x0")
        #expect(g.symbolize(0xFFFF_FFFF_80FF_0000) == nil)
    }

    @Test func olderKernelsRelativeBaseLayout() throws {
        let (space, sym, syms) = try Self.guestTables()
        // Rewrite the offsets the pre-7.x x86-64 way: base - 1 - offset (negative entries).
        let base: UInt64 = 0xFFFF_FFFF_8100_0000
        var s = sym
        s["kallsyms_relative_base"] = 0xFFFF_FFFF_8200_0F00
        try space.memory.write(base, at: 0x200_0F00)
        for (i, (addr, _)) in syms.enumerated() {
            let rel = Int32(-Int64(addr - base) - 1)
            try space.memory.write(UInt32(bitPattern: rel), at: sym["kallsyms_offsets"]! - KernelAddressSpace.startKernelMap + UInt64(i * 4))
        }
        let g = try #require(GuestKallsyms(symbols: s, space: space))
        #expect(g.symbolize(0xFFFF_FFFF_8100_0000 + 7 * 0x100 + 0x42) == "fn7+0x42")
    }

    @Test func guestKallsymsRefusesGarbage() throws {
        let (space, sym, _) = try Self.guestTables()
        var missing = sym; missing["kallsyms_names"] = nil
        #expect(GuestKallsyms(symbols: missing, space: space) == nil)
        var wild = sym; wild["kallsyms_num_syms"] = 0xFFFF_FFFF_8000_0000 + (47 << 20)
        #expect(GuestKallsyms(symbols: wild, space: space) == nil) // zero count
        // Offsets pointing out of RAM: lookups fail softly.
        var bad = sym; bad["kallsyms_offsets"] = 0xFFFF_FFFF_9F00_0000
        let g = try #require(GuestKallsyms(symbols: bad, space: space))
        #expect(g.symbolize(0xFFFF_FFFF_8100_0000) == nil)
    }
}
