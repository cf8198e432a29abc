import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct BootParamsTests {
    @Test func copiesHeaderAndSetsLoaderFields() throws {
        let h = try #require(try KernelImage(bytes: syntheticBzImage()).setupHeader)
        var bp = BootParams(header: h)
        #expect(bp.bytes.count == 4096)
        #expect(bp.u32(0x202) == 0x5372_6448) // "HdrS"
        #expect(bp.u16(0x206) == 0x020f)
        #expect(bp.u16(0x1fe) == 0xaa55)
        #expect(bp.u8(0x210) == 0xff)
        #expect(bp.u8(0x211) & 0x81 == 0x81)
        #expect(bp.u32(0x230) == 0x20_0000)
        bp.setCommandLine(at: 0x2_0000)
        #expect(bp.u32(0x228) == 0x2_0000 && bp.u32(0x0c8) == 0)
        bp.setRamdisk(at: 0x1_2345_6000, size: 0x1_0000_0010)
        #expect(bp.u32(0x218) == 0x2345_6000 && bp.u32(0x0c0) == 1)
        #expect(bp.u32(0x21c) == 0x10 && bp.u32(0x0c4) == 1)
    }

    @Test func syntheticHeaderForELF() {
        let bp = BootParams(header: nil)
        #expect(bp.u32(0x202) == 0x5372_6448)
        #expect(bp.u16(0x206) >= 0x020c)
        #expect(bp.u16(0x1fe) == 0xaa55)
        #expect(bp.u8(0x210) == 0xff)
    }

    @Test func e820TableAt0x2d0() throws {
        var bp = BootParams(header: nil)
        let map = E820.map(memoryBytes: 256 << 20)
        try bp.setE820(map)
        #expect(bp.u8(0x1e8) == UInt8(map.count))
        #expect(bp.bytes.le(UInt64.self, at: 0x2d0) == 0)
        #expect(bp.bytes.le(UInt64.self, at: 0x2d8) == 0x9_fc00)
        #expect(bp.u32(0x2e0) == 1)
        #expect(bp.bytes.le(UInt64.self, at: 0x2d0 + 20) == 0x9_fc00)
        #expect(bp.u32(0x2d0 + 20 + 16) == 2)
        let tooMany = [E820Entry](repeating: E820Entry(address: 0, size: 1, kind: .ram), count: 129)
        #expect(throws: BootParamsError.tooManyE820Entries(129)) { try bp.setE820(tooMany) }
    }

    @Test func initrdGoesHighButAboveTheKernel() throws {
        // 256 MiB RAM, kernel buffer up to 80 MiB: a 10 MiB initrd lands page-aligned under the top.
        let a = try BootParams.initrdAddress(size: 10 << 20 | 123, ramTop: 256 << 20, initrdAddrMax: 0x7fff_ffff, kernelEnd: 80 << 20)
        #expect(a % 4096 == 0)
        #expect(a + UInt64(10 << 20 | 123) <= 256 << 20)
        #expect(a > (256 - 11) << 20)
        // initrd_addr_max below RAM top wins.
        let b = try BootParams.initrdAddress(size: 4096, ramTop: 3 << 30, initrdAddrMax: 0x3fff_ffff, kernelEnd: 80 << 20)
        #expect(b == 0x4000_0000 - 4096)
        #expect(throws: BootParamsError.self) {
            try BootParams.initrdAddress(size: 200 << 20, ramTop: 256 << 20, initrdAddrMax: 0x7fff_ffff, kernelEnd: 80 << 20)
        }
    }

    @Test func commandLineLengthIsChecked() throws {
        let line = KernelCommandLine(extra: "ktstr.marker=abc")
        let b = try line.bytes(maxLength: 2047)
        #expect(b.last == 0)
        #expect(line.description.contains("console=ttyS0"))
        #expect(line.description.contains("reboot=k"))
        #expect(line.description.hasSuffix("ktstr.marker=abc"))
        #expect(throws: BootParamsError.self) { try line.bytes(maxLength: 20) }
    }

    @Test func gdtSelectorsMatchSegmentCaches() {
        let s = EntryState(entry: 0x10_0200)
        #expect(s.cs.selector == 0x10 && s.data.selector == 0x18)
        #expect(s.cs.l && !s.cs.db && s.cs.present && s.cs.s && s.cs.type == 0xb && s.cs.g)
        #expect(s.cs.limit == 0xffff_ffff && s.cs.base == 0)
        #expect(!s.data.l && s.data.db && s.data.type == 0x3 && s.data.limit == 0xffff_ffff)
        #expect(!s.tr.s && s.tr.type == 0xb && s.tr.present)
        #expect(GDT.bytes.count == Int(GDT.limit) + 1)
        #expect(GDT.bytes.le(UInt64.self, at: 0x10) == GDT.code64)
        #expect(s.cr0 & 0x8000_0001 == 0x8000_0001)
        #expect(s.cr4 & 0x20 != 0)
        #expect(s.efer == 0x500)
        #expect(s.rsi == BootLayout.zeroPage)
    }

    @Test func lapicLintModes() {
        var regs = [UInt8](repeating: 0, count: 1024)
        regs.putLE(UInt32(0x1_0000 | 0x700), at: 0x350)
        LAPICSetup.apply(to: &regs)
        #expect(regs.le(UInt32.self, at: 0x350) == 0x1_0700)
        #expect(regs.le(UInt32.self, at: 0x360) == 0x400)
    }
}
