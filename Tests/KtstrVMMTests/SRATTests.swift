import Testing
@testable import KtstrMachine
@testable import KtstrVMM

@Suite struct SRATTests {
    static let base: UInt64 = 0xe_0000

    @Test func numaTopologyGetsSRATAndSLIT() throws {
        let topo = Topology(numaNodes: 2, llcs: 2, coresPerLLC: 2, threadsPerCore: 1)
        let ids = (0..<topo.vcpuCount).map { CPUID.apicID(of: $0, in: topo) }
        let memoryBytes: UInt64 = 512 << 20
        let numa = ACPITables.NUMA(topology: topo, ramRegions: BootLayout.ramRegions(memoryBytes: memoryBytes))
        let b = ACPITables.build(apicIDs: ids, base: Self.base, numa: numa)
        let t = try ACPITests.tables(b, base: Self.base)
        #expect(Set(t.keys) == ["XSDT", "APIC", "SRAT", "SLIT"])
        for (name, table) in t {
            #expect(ACPITests.sum(table) == 0, "\(name) checksum")
            #expect(table.count == Int(Array(table).le(UInt32.self, at: 4) ?? 0), "\(name) length")
        }

        let srat = Array(try #require(t["SRAT"]))
        #expect(srat[8] == 3)
        #expect(srat.le(UInt32.self, at: 36) == 1)
        var o = 48
        var cpuNodes: [UInt32: UInt32] = [:]
        var ranges: [(node: UInt32, base: UInt64, size: UInt64)] = []
        while o < srat.count {
            let type = srat[o], len = Int(srat[o + 1])
            try #require(len >= 16 && o + len <= srat.count, "entry at \(o)")
            switch type {
            case 0:
                #expect(len == 16)
                #expect(srat.le(UInt32.self, at: o + 4) == 1, "enabled")
                let node = UInt32(srat[o + 2]) | UInt32(srat[o + 9]) << 8 | UInt32(srat[o + 10]) << 16 | UInt32(srat[o + 11]) << 24
                cpuNodes[UInt32(srat[o + 3])] = node
            case 1:
                #expect(len == 40)
                #expect(srat.le(UInt32.self, at: o + 28) == 1, "enabled")
                ranges.append((try #require(srat.le(UInt32.self, at: o + 2)), try #require(srat.le(UInt64.self, at: o + 8)),
                               try #require(srat.le(UInt64.self, at: o + 16))))
            default: Issue.record("unexpected SRAT entry type \(type)")
            }
            o += len
        }
        #expect(o == srat.count)
        // CPUs 0-1 on node 0, 2-3 on node 1, by APIC id.
        #expect(cpuNodes == Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, UInt32($0 / 2)) }))
        // RAM: the first half on node 0, the second on node 1, contiguous, all of it.
        #expect(ranges.map(\.node) == [0, 1])
        #expect(ranges.map(\.base) == [0, 256 << 20])
        #expect(ranges.map(\.size) == [256 << 20, 256 << 20])

        let slit = Array(try #require(t["SLIT"]))
        #expect(slit.le(UInt64.self, at: 36) == 2)
        #expect(Array(slit[44...]) == [10, 20, 20, 10])
    }

    @Test func nodeRangesSplitAtTheMMIOGap() {
        // 4 GiB over 2 nodes: node 0 = [0, 2G), node 1 = [2G, 3G) + [4G, 5G).
        let topo = Topology(numaNodes: 2, llcs: 2, coresPerLLC: 1)
        let numa = ACPITables.NUMA(topology: topo, ramRegions: BootLayout.ramRegions(memoryBytes: 4 << 30))
        #expect(numa.memory.map(\.node) == [0, 1, 1])
        #expect(numa.memory.map(\.base) == [0, 2 << 30, 4 << 30])
        #expect(numa.memory.map(\.size) == [2 << 30, 1 << 30, 1 << 30])
        #expect(numa.nodeOfCPU == [0, 1])
    }

    @Test func noNUMANoSRAT() throws {
        let b = ACPITables.build(apicIDs: [0, 1], base: Self.base)
        #expect(Set(try ACPITests.tables(b, base: Self.base).keys) == ["XSDT", "APIC"])
    }
}
