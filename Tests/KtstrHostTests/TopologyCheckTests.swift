import Testing
@testable import KtstrMachine
@testable import KtstrHost
@testable import KtstrProtocol

@Suite struct TopologyCheckTests {
    @Test func presetsAndNames() throws {
        #expect(Topology.presets.map(\.name) == ["1x1x1", "1x2x1", "2llc", "2numa", "smt"])
        #expect(Topology.single.vcpuCount == 1)
        #expect(Topology.flat2 == Topology(llcs: 1, coresPerLLC: 2))
        #expect(Topology.twoLLCs.llcs == 2 && Topology.twoLLCs.vcpuCount == 4)
        #expect(Topology.twoNodes.numaNodes == 2 && Topology.twoNodes.llcs == 2 && Topology.twoNodes.vcpuCount == 4)
        #expect(Topology.smtPairs.threadsPerCore == 2 && Topology.smtPairs.vcpuCount == 4)
        for (name, t) in Topology.presets {
            #expect(Topology(named: name) == t)
            #expect(t.presetName == name)
        }
        #expect(Topology(named: "2x3x1") == Topology(llcs: 2, coresPerLLC: 3))
        #expect(Topology(named: "2n4x1x2") == Topology(numaNodes: 2, llcs: 4, coresPerLLC: 1, threadsPerCore: 2))
        #expect(Topology(named: "3n2x1x1") == nil)
        #expect(Topology(named: "2x2") == nil)
        #expect(Topology(named: "bogus") == nil)
        #expect(Topology.twoNodes.description == "2n2x2x1")
        #expect(Topology(named: Topology.twoNodes.description) == .twoNodes)
    }

    @Test func numaDividesLLCsAndRAM() throws {
        let t = Topology(numaNodes: 2, llcs: 4, coresPerLLC: 2, threadsPerCore: 1)
        #expect(t.nodeCPUs == [0...3, 4...7])
        #expect(t.llcCPUs == [0...1, 2...3, 4...5, 6...7])
        #expect((0..<8).map(t.node(ofCPU:)) == [0, 0, 0, 0, 1, 1, 1, 1])
        #expect(t.nodeMemoryMiB(513) == [256, 257])
        #expect(Topology(numaNodes: 3, llcs: 4, coresPerLLC: 1).numaNodes == 2)
        // Old encodings (no numaNodes) still decode, as one node.
        let old = try JSONDecoderShim.decode(#"{"llcs":2,"coresPerLLC":1,"threadsPerCore":1}"#)
        #expect(old == Topology(llcs: 2, coresPerLLC: 1) && old.numaNodes == 1)
    }

    @Test func guestTopologyIsComparedWithTheRequest() {
        let ok = GuestTopology(l3Groups: ["0-1", "2-3"], numaNodes: ["0-1", "2-3"])
        #expect(RunOutcome.topologyDifference(requested: .twoNodes, guest: ok) == nil)
        #expect(RunOutcome.topologyDifference(requested: .twoLLCs, guest: GuestTopology(l3Groups: ["2-3", "0-1"], numaNodes: ["0-3"])) == nil)
        let flat = GuestTopology(l3Groups: ["0-3"], numaNodes: ["0-3"])
        #expect(RunOutcome.topologyDifference(requested: .twoNodes, guest: flat)
                == "asked 2n2x2x1: guest has L3 groups [0-3], expected [0-1] [2-3]; NUMA nodes [0-3], expected [0-1] [2-3]")
        var o = RunOutcome(backend: .qemuTCG, wallMillis: 1)
        o.guestTopology = flat
        o.checkTopology(requested: .twoLLCs)
        #expect(o.problems.map(\.kind) == [.topologyMismatch])
        #expect(o.problems.first?.description.hasPrefix("topology mismatch: asked 2x2x1: guest has L3 groups [0-3]") == true)
        // No report (an older agent): nothing to compare.
        var none = RunOutcome(backend: .qemuTCG, wallMillis: 1)
        none.checkTopology(requested: .twoLLCs)
        #expect(none.problems.isEmpty)
    }
}

import Foundation
enum JSONDecoderShim {
    static func decode(_ s: String) throws -> Topology { try JSONDecoder().decode(Topology.self, from: Data(s.utf8)) }
}
