import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct ACPITests {
    static func sum(_ b: ArraySlice<UInt8>) -> UInt8 { b.reduce(0, &+) }

    /// Finds a table by following RSDP → XSDT (addresses relative to `base`).
    static func tables(_ b: [UInt8], base: UInt64) throws -> [String: ArraySlice<UInt8>] {
        let xsdt = Int(try #require(b.le(UInt64.self, at: 24)) - base)
        let xlen = Int(try #require(b.le(UInt32.self, at: xsdt + 4)))
        var out: [String: ArraySlice<UInt8>] = ["XSDT": b[xsdt..<xsdt + xlen]]
        for i in 0..<(xlen - 36) / 8 {
            let off = Int(try #require(b.le(UInt64.self, at: xsdt + 36 + 8 * i)) - base)
            let len = Int(try #require(b.le(UInt32.self, at: off + 4)))
            out[String(decoding: b[off..<off + 4], as: UTF8.self)] = b[off..<off + len]
        }
        return out
    }

    @Test(arguments: [1, 4, 16])
    func checksumsAndMADT(cpus: Int) throws {
        let topo = Topology(llcs: cpus >= 4 ? 2 : 1, coresPerLLC: max(1, cpus / 2 / (cpus >= 4 ? 2 : 1)), threadsPerCore: cpus >= 2 ? 2 : 1)
        let ids = (0..<topo.vcpuCount).map { CPUID.apicID(of: $0, in: topo) }
        let base: UInt64 = 0xe_0000
        let b = ACPITables.build(apicIDs: ids, base: base)
        #expect(Array(b[0..<8]) == Array("RSD PTR ".utf8))
        #expect(Self.sum(b[0..<20]) == 0)
        #expect(Self.sum(b[0..<36]) == 0)
        #expect(b[15] == 2)
        let t = try Self.tables(b, base: base)
        // No FADT on purpose (it would take the legacy PIC away from the 8250 IRQs).
        #expect(Set(t.keys) == ["XSDT", "APIC"])
        for (name, table) in t { #expect(Self.sum(table) == 0, "\(name) checksum") }
        // MADT: one enabled LAPIC entry per vCPU with its APIC id, then the IOAPIC.
        let madt = Array(try #require(t["APIC"]))
        #expect(madt.le(UInt32.self, at: 36) == 0xfee0_0000)
        var o = 44
        var lapics: [UInt32] = []
        var ioapics = 0
        while o + 2 <= madt.count {
            let type = madt[o], len = Int(madt[o + 1])
            #expect(len >= 2)
            if type == 0 { lapics.append(UInt32(madt[o + 3])); #expect(madt.le(UInt32.self, at: o + 4) == 1) }
            if type == 1 { ioapics += 1; #expect(madt.le(UInt32.self, at: o + 4) == 0xfec0_0000) }
            o += max(2, len)
        }
        #expect(o == madt.count)
        #expect(lapics == ids)
        #expect(ioapics == 1)
    }

    @Test func zeroPageCarriesTheRSDP() {
        var bp = BootParams(header: nil)
        bp.setACPIRoot(at: 0xe_0000)
        #expect(bp.bytes.le(UInt64.self, at: 0x70) == 0xe_0000)
    }
}
