import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct MPTableTests {
    static func sum(_ b: ArraySlice<UInt8>) -> UInt8 { b.reduce(0, &+) }

    @Test(arguments: [1, 2, 4, 16, 64])
    func checksumsAndEntryCounts(cpus: Int) throws {
        let t = Topology(llcs: cpus >= 4 ? 2 : 1, coresPerLLC: cpus >= 4 ? cpus / 4 : cpus, threadsPerCore: cpus >= 4 ? 2 : 1)
        let ids = (0..<t.vcpuCount).map { CPUID.apicID(of: $0, in: t) }
        let b = try MPTable.build(apicIDs: ids)
        #expect(Array(b[0..<4]) == Array("_MP_".utf8))
        #expect(Self.sum(b[0..<16]) == 0)
        #expect(b.le(UInt32.self, at: 4) == UInt32(BootLayout.mpTable + 16))
        #expect(Array(b[16..<20]) == Array("PCMP".utf8))
        let len = Int(try #require(b.le(UInt16.self, at: 20)))
        #expect(16 + len == b.count)
        #expect(Self.sum(b[16..<16 + len]) == 0)
        #expect(b.le(UInt32.self, at: 16 + 36) == 0xfee0_0000)
        // Entries: processors first with their APIC ids, BSP flagged once.
        var o = 16 + 44
        var seen: [UInt32] = []
        while o < b.count, b[o] == 0 {
            seen.append(UInt32(b[o + 1]))
            #expect(b[o + 3] & 1 == 1)
            #expect((b[o + 3] & 2 != 0) == (seen.count == 1))
            o += 20
        }
        #expect(seen == ids)
        #expect(b[o] == 1) // bus
        #expect(b[o + 8] == 2 && b[o + 9] == UInt8(ids.max()! + 1)) // IOAPIC after the highest APIC id
        #expect(b.le(UInt16.self, at: 16 + 34) == UInt16(t.vcpuCount + 2 + 16 + 2))
    }

    @Test func corruptingAByteBreaksTheChecksum() throws {
        var b = try MPTable.build(apicIDs: [0, 1])
        b[16 + 50] ^= 0x40
        #expect(Self.sum(b[16...]) != 0)
    }

    @Test func tooManyCPUs() {
        #expect(throws: MPTable.Error.self) { try MPTable.build(apicIDs: Array(0..<300)) }
    }
}
