import CKVM
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// The guest image KVMMachine builds, checked in plain memory (no KVM needed).
@Suite struct KVMLinuxBootTests {
    @Test func guestMemoryLayoutForAnELFKernelWithInitrd() throws {
        let memBytes: UInt64 = 128 << 20
        let mem = try GuestMemory.anonymous(layout: BootLayout.ramRegions(memoryBytes: memBytes))
        let image = try KernelImage(bytes: syntheticELF())
        let initrd = [UInt8](repeating: 0x5a, count: 10_000)
        let cmd = KernelCommandLine(extra: "ktstr.marker=xyz")
        let topo = Topology(llcs: 1, coresPerLLC: 2, threadsPerCore: 2)
        let ids = (0..<4).map { CPUID.apicID(of: $0, in: topo) }
        let loaded = try KVMLinuxBoot.loadGuest(image: image, memoryBytes: memBytes, initrd: initrd,
                                                commandLine: cmd, apicIDs: ids, into: mem)
        #expect(loaded.entry == 0x100_0010)
        // Zero page.
        let zp = BootLayout.zeroPage
        #expect(try mem.read(UInt32.self, at: zp + 0x202) == 0x5372_6448)
        #expect(try mem.read(UInt16.self, at: zp + 0x1fe) == 0xaa55)
        #expect(try mem.read(UInt8.self, at: zp + 0x210) == 0xff)
        #expect(try mem.read(UInt32.self, at: zp + 0x228) == UInt32(BootLayout.commandLine))
        #expect(try mem.read(UInt64.self, at: zp + 0x70) == BootLayout.acpi)
        #expect(try mem.read(UInt8.self, at: zp + 0x1e8) == 3)
        // Command line, NUL-terminated.
        let line = try mem.readCString(at: BootLayout.commandLine, maxLength: 4096)
        #expect(line == cmd.description)
        // initrd: high, page-aligned, above the kernel, bytes intact.
        let rd = try #require(loaded.initrd)
        #expect(try mem.read(UInt32.self, at: zp + 0x218) == UInt32(rd.address))
        #expect(try mem.read(UInt32.self, at: zp + 0x21c) == 10_000)
        #expect(rd.address % 4096 == 0 && rd.address >= image.occupiedRange.upperBound)
        #expect(rd.address + 10_000 <= memBytes && rd.address + 10_000 + 4096 > memBytes)
        #expect(try mem.readBytes(at: rd.address, count: 10_000) == initrd)
        // Tables.
        #expect(try mem.read(UInt64.self, at: BootLayout.pml4) == BootLayout.pdpt | 3)
        #expect(try mem.read(UInt64.self, at: BootLayout.gdt + 0x10) == GDT.code64)
        #expect(try mem.readBytes(at: BootLayout.acpi, count: 8) == Array("RSD PTR ".utf8))
        #expect(try mem.readBytes(at: BootLayout.mpTable, count: 4) == Array("_MP_".utf8))
        // The kernel itself.
        #expect(try mem.read(UInt8.self, at: 0x100_0000) == 0xcc)
    }

    @Test func initrdThatDoesNotFitIsATypedError() throws {
        let memBytes: UInt64 = 80 << 20
        let mem = try GuestMemory.anonymous(layout: BootLayout.ramRegions(memoryBytes: memBytes))
        let image = try KernelImage(bytes: syntheticBzImage()) // occupies up to 64 MiB
        #expect(throws: BootParamsError.self) {
            try KVMLinuxBoot.loadGuest(image: image, memoryBytes: memBytes, initrd: [UInt8](repeating: 1, count: 20 << 20),
                                       commandLine: KernelCommandLine(), apicIDs: [0], into: mem)
        }
    }

    @Test func kvmStructConversions() {
        let e = CPUIDEntry(function: 0xb, index: 1, flags: 1, eax: 2, ebx: 4, ecx: 0x201, edx: 3)
        #expect(KVMLinuxBoot.cpuid(KVMLinuxBoot.cpuid(e)) == e)
        let cs = KVMLinuxBoot.segment(GDT.segment(GDT.codeSelector))
        #expect(cs.selector == 0x10 && cs.l == 1 && cs.db == 0 && cs.present == 1 && cs.type == 0xb && cs.g == 1)
        #expect(cs.limit == 0xffff_ffff && cs.unusable == 0 && cs.s == 1)
        let ds = KVMLinuxBoot.segment(GDT.segment(GDT.dataSelector))
        #expect(ds.selector == 0x18 && ds.l == 0 && ds.db == 1 && ds.type == 3)
        let tr = KVMLinuxBoot.segment(GDT.segment(GDT.tssSelector))
        #expect(tr.selector == 0x20 && tr.s == 0 && tr.type == 0xb && tr.present == 1)
    }
}
