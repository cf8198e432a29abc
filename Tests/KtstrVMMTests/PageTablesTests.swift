import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct PageTablesTests {
    @Test func identityMapsFirstGiBs() throws {
        let pt = PageTables()
        #expect(pt.cr3 == 0x9000)
        #expect(pt.pages.map(\.gpa) == [0x9000, 0xa000, 0xb000, 0xc000, 0xd000, 0xe000])
        for va: UInt64 in [0, 0x7000, 0x10_0200, 0x100_0000, 0x3fff_ffff, 0x4000_0000, 0xbfff_f123, 0xffff_ffff] {
            #expect(pt.translate(va) == va)
        }
        #expect(pt.translate(0x1_0000_0000) == nil)
        #expect(pt.pages[0].bytes.le(UInt64.self, at: 0) == 0xa003)
        #expect(pt.pages[2].bytes.le(UInt64.self, at: 8) == 0x20_0083)
        // The tables do not overlap the zero page, the stack or the command line.
        for p in pt.pages {
            #expect(p.gpa >= BootLayout.stackTop && p.gpa + 4096 <= BootLayout.commandLine)
        }
    }

    @Test func writesIntoGuestMemory() throws {
        let mem = try GuestMemory.anonymous(layout: [(0, 2 << 20)])
        try PageTables(gib: 1).write(into: mem)
        #expect(try mem.read(UInt64.self, at: 0x9000) == 0xa003)
        #expect(try mem.read(UInt64.self, at: 0xa000) == 0xb003)
        #expect(try mem.read(UInt64.self, at: 0xb000 + 511 * 8) == 0x3fe0_0083)
    }
}
