import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct E820Tests {
    @Test func smallGuest() {
        let m = E820.map(memoryBytes: 256 << 20)
        #expect(m == [
            E820Entry(address: 0, size: 0x9_fc00, kind: .ram),
            E820Entry(address: 0x9_fc00, size: 0x10_0000 - 0x9_fc00, kind: .reserved),
            E820Entry(address: 0x10_0000, size: (256 << 20) - 0x10_0000, kind: .ram),
        ])
        #expect(BootLayout.ramRegions(memoryBytes: 256 << 20).map(\.size) == [256 << 20])
    }

    @Test func largeGuestSplitsAroundTheGap() {
        let total: UInt64 = 5 << 30
        let m = E820.map(memoryBytes: total)
        #expect(m.count == 4)
        #expect(m[2].end == 3 << 30)
        #expect(m[3].address == 4 << 30 && m[3].size == 2 << 30)
        let regions = BootLayout.ramRegions(memoryBytes: total)
        #expect(regions.map(\.gpa) == [0, 4 << 30])
        #expect(regions.map(\.size).reduce(0, +) == total)
        // Every RAM entry is backed by a region.
        for e in m where e.kind == .ram {
            #expect(regions.contains { e.address >= $0.gpa && e.end <= $0.gpa + $0.size })
        }
        #expect(m[0].bytes.count == 20)
    }

    @Test func entriesDoNotOverlapAndAreSorted() {
        for mib: UInt64 in [64, 1024, 3072, 3073, 8192] {
            let m = E820.map(memoryBytes: mib << 20)
            for (a, b) in zip(m, m.dropFirst()) { #expect(a.end <= b.address) }
        }
    }
}
