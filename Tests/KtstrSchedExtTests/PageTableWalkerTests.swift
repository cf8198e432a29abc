import Testing
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct PageTableWalkerTests {
    static let ram: UInt64 = 64 << 20

    /// Writes `entry` at index `i` of the table at `table`.
    static func put(_ mem: GuestMemory, _ table: UInt64, _ i: UInt64, _ entry: UInt64) throws {
        try mem.write(entry, at: table + i * 8)
    }
    static func idx(_ va: UInt64, _ level: Int) -> UInt64 { (va >> UInt64(12 + 9 * (level - 1))) & 0x1FF }

    /// PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000; maps:
    /// a 4 KiB page, a 2 MiB page, a 1 GiB page (at GPA 0), a not-present PT slot.
    static func tables() throws -> (GuestMemory, [String: UInt64]) {
        let mem = try GuestMemory.anonymous(layout: [(0, ram)])
        let base: UInt64 = 0xFFFF_C900_0000_0000 // vmalloc-like
        let va4k = base + 0x0040_5123
        let va2m = base + 0x0060_0000 + 0x1234   // PD index 3
        let va1g = base + (1 << 30) + 0x12_3456   // PDPT index 1
        try put(mem, 0x1000, idx(base, 4), 0x2000 | 3)
        try put(mem, 0x2000, idx(base, 3), 0x3000 | 3)
        try put(mem, 0x2000, idx(va1g, 3), 0x0 | 0x83)             // 1 GiB page at GPA 0
        try put(mem, 0x3000, idx(va4k, 2), 0x4000 | 3)
        try put(mem, 0x3000, idx(va2m, 2), 0x0200_0000 | 0x83)     // 2 MiB page at 32 MiB
        try put(mem, 0x4000, idx(va4k, 1), 0x0280_0000 | 3 | (1 << 63)) // NX bit set: ignored
        return (mem, ["4k": va4k, "2m": va2m, "1g": va1g, "base": base])
    }

    @Test func translatesAllPageSizes() throws {
        let (mem, va) = try Self.tables()
        let w = PageTableWalker(memory: mem, cr3: 0x1000 | 0x18 /* PCD|PWT flag bits */, fiveLevel: false)
        #expect(try w.translate(va["4k"]!) == 0x0280_0123)
        #expect(try w.translate(va["2m"]!) == 0x0200_1234)
        #expect(try w.translate(va["1g"]!) == 0x12_3456)
    }

    @Test func notPresentAndNonCanonicalAreTypedErrors() throws {
        let (mem, va) = try Self.tables()
        let w = PageTableWalker(memory: mem, cr3: 0x1000, fiveLevel: false)
        #expect(throws: AddressError.notPresent(va: va["4k"]! + 0x1000, level: 1)) { try w.translate(va["4k"]! + 0x1000) }
        #expect(throws: AddressError.notPresent(va: 0xFFFF_8880_0000_0000, level: 4)) { try w.translate(0xFFFF_8880_0000_0000) }
        #expect(throws: AddressError.nonCanonical(0x0000_9000_0000_0000)) { try w.translate(0x0000_9000_0000_0000) }
        // 57-bit canonical but not 48-bit:
        let w5 = PageTableWalker(memory: mem, cr3: 0x1000, fiveLevel: true)
        #expect(w5.isCanonical(0xFF11_0000_0000_0000) && !w.isCanonical(0xFF11_0000_0000_0000))
    }

    @Test func entriesPointingOutOfRAM() throws {
        let (mem, va) = try Self.tables()
        let base = va["base"]!
        // PD entry → a PT far outside RAM; PT entry → a page outside RAM.
        try Self.put(mem, 0x3000, 7, 0x7_0000_0000 | 3)
        try Self.put(mem, 0x4000, 9, 0x9_0000_0000 | 3)
        let w = PageTableWalker(memory: mem, cr3: 0x1000, fiveLevel: false)
        let a = base + (7 << 21)
        #expect(throws: AddressError.tableOutOfRAM(va: a, level: 1, gpa: 0x7_0000_0000)) { try w.translate(a) }
        let b = base + 0x40_0000 + (9 << 12)
        #expect(throws: AddressError.pageOutOfRAM(va: b, gpa: 0x9_0000_0000)) { try w.translate(b) }
        // A CR3 outside RAM.
        let bad = PageTableWalker(memory: mem, cr3: 0x10_0000_0000, fiveLevel: false)
        #expect(throws: AddressError.self) { try bad.translate(base) }
    }

    @Test func fiveLevelWalk() throws {
        let mem = try GuestMemory.anonymous(layout: [(0, 1 << 24)])
        let va: UInt64 = 0xFF11_0000_1234_5678 // the 5-level direct map region
        func idx5(_ l: Int) -> UInt64 { (va >> UInt64(12 + 9 * (l - 1))) & 0x1FF }
        try Self.put(mem, 0x1000, idx5(5), 0x2000 | 3)
        try Self.put(mem, 0x2000, idx5(4), 0x3000 | 3)
        try Self.put(mem, 0x3000, idx5(3), 0x4000 | 3)
        try Self.put(mem, 0x4000, idx5(2), 0x0040_0000 | 0x83) // 2 MiB page at 4 MiB
        let w = PageTableWalker(memory: mem, cr3: 0x1000, fiveLevel: true)
        #expect(try w.translate(va) == 0x0040_0000 | (va & 0x1F_FFFF))
        // The same tables read as 4-level: that address is not even canonical.
        #expect(throws: AddressError.nonCanonical(va)) { try PageTableWalker(memory: mem, cr3: 0x1000, fiveLevel: false).translate(va) }
    }

    @Test func selfReferencingTablesEndInBoundedSteps() throws {
        let mem = try GuestMemory.anonymous(layout: [(0, 1 << 20)])
        // Every entry of the table at 0x1000 points back at itself.
        for i in 0..<512 { try mem.write(UInt64(0x1000 | 3), at: 0x1000 + UInt64(i) * 8) }
        let w = PageTableWalker(memory: mem, cr3: 0x1000, fiveLevel: true)
        // Five steps, each lands on the same table; the final "page" is the table itself.
        #expect(try w.translate(0xFFFF_FFFF_FFFF_F008) == 0x1008)
        let w4 = PageTableWalker(memory: mem, cr3: 0x1000, fiveLevel: false)
        #expect(try w4.translate(0x0000_0000_0000_0010) == 0x1010)
    }

    @Test func addressSpaceFastPathsAndCrossPageReads() throws {
        let (mem, va) = try Self.tables()
        let w = PageTableWalker(memory: mem, cr3: 0x1000, fiveLevel: false)
        let pob: UInt64 = 0xFFFF_8880_0000_0000
        let space = KernelAddressSpace(memory: mem, physBase: 0x20_0000, pageOffsetBase: pob, walker: w)
        #expect(try space.translate(0xFFFF_FFFF_8100_0010) == 0x0120_0010)  // image
        #expect(try space.translate(pob + 0x1234) == 0x1234)                 // direct map
        #expect(try space.translate(va["2m"]!) == 0x0200_1234)              // walk
        #expect(throws: AddressError.self) { try space.translate(pob + Self.ram + 0x1000) }
        // Map two adjacent virtual 4 KiB pages to non-adjacent physical pages and read across.
        let v = va["4k"]! & ~0xFFF
        try Self.put(mem, 0x4000, Self.idx(v + 0x1000, 1), 0x0300_0000 | 3)
        try mem.write(Array("hello, ".utf8), at: 0x0280_0FF9)
        try mem.write(Array("world\0".utf8), at: 0x0300_0000)
        #expect(try space.readCString(at: v + 0xFF9, maxLength: 64) == "hello, world")
        #expect(try space.readCString(at: v + 0xFF9, maxLength: 5) == "hello")
        #expect(try space.read(UInt64.self, at: pob + 0x3000 + Self.idx(va["2m"]!, 2) * 8) == 0x0200_0000 | 0x83)
    }

    @Test func imageRangeFollowsTheSymbols() throws {
        let start = KernelAddressSpace.startKernelMap
        #expect(KernelAddressSpace.imageRange(symbols: ["_text": start + 0x100_0000, "_end": start + 0x400_0000]) == (start + 0x100_0000)..<(start + 0x400_0000))
        // No _text/_end: the 512 MiB default, widened for a KASLR kernel high in the map.
        #expect(KernelAddressSpace.imageRange(symbols: [:]).upperBound == start + (512 << 20))
        let high = KernelAddressSpace.imageRange(symbols: ["scx_root": start + (900 << 20)])
        #expect(high.contains(start + (900 << 20)) && high.upperBound <= start + (1 << 30))
        // Module/BPF JIT space is never translated as image.
        let mem = try GuestMemory.anonymous(layout: [(0, 1 << 20)])
        let s = KernelAddressSpace(memory: mem, physBase: 0, pageOffsetBase: nil, walker: nil,
                                   imageRange: KernelAddressSpace.imageRange(symbols: ["_text": start + 0x100_0000, "_end": start + 0x400_0000]))
        #expect(s.imageGPA(0xFFFF_FFFF_C000_0000) == nil && s.imageGPA(start + 0x200_0000) == 0x200_0000)
    }

    @Test func physBaseIsDiscoveredAndValidated() throws {
        let mem = try GuestMemory.anonymous(layout: [(0, Self.ram)])
        let physBaseSym: UInt64 = 0xFFFF_FFFF_8200_0000, startBTF: UInt64 = 0xFFFF_FFFF_8210_0000
        let pb: UInt64 = 6 << 20
        try mem.write(pb, at: 0x0200_0000 + pb)
        try mem.write(BTF.magic, at: 0x0210_0000 + pb)
        #expect(KernelAddressSpace.discoverPhysBase(memory: mem, physBaseSymbol: physBaseSym, startBTF: startBTF) == pb)
        // Virtual KASLR offset larger than the physical one: phys_base wraps below zero.
        let neg = try GuestMemory.anonymous(layout: [(0, Self.ram)])
        let npb: UInt64 = 0 &- (16 << 20)
        try neg.write(npb, at: 0x0200_0000 &+ npb)
        try neg.write(BTF.magic, at: 0x0210_0000 &+ npb)
        #expect(KernelAddressSpace.discoverPhysBase(memory: neg, physBaseSymbol: physBaseSym, startBTF: startBTF) == npb)
        let empty = try GuestMemory.anonymous(layout: [(0, Self.ram)])
        #expect(KernelAddressSpace.discoverPhysBase(memory: empty, physBaseSymbol: physBaseSym, startBTF: startBTF) == nil)
    }
}
