import KtstrTesting

/// The requested topology is what the guest kernel sees (reported by the agent's hello and
/// compared by the host: a difference is a `topologyMismatch` problem).
@Suite(.ktstr(memoryMiB: 512))
struct GuestTopologyVisibility {
    /// Two NUMA nodes of one 2-core LLC each: the guest has nodes 0-1 and 2-3.
    @Test(.ktstr(topology: .twoNodes))
    func twoNUMANodesAreVisibleInTheGuest() async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .spinners(4), duration: .seconds(2))
        let topo = try #require(outcome.guestTopology, "no topology in the hello: \(outcome.problems)")
        #expect(topo.numaNodes == ["0-1", "2-3"])
        #expect(topo.l3Groups == ["0-1", "2-3"])
        #expect(!outcome.problems.contains(.topologyMismatch), "\(outcome.problems)")
        outcome.expectNoSchedulerError()
        outcome.expectAllWorkersRan()
    }

    /// Two LLCs of two cores: two L3 sharing groups, one node.
    @Test(.ktstr(topology: .twoLLCs))
    func twoLLCsAreTwoL3Groups() async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .spinners(4), duration: .seconds(2))
        let topo = try #require(outcome.guestTopology, "no topology in the hello: \(outcome.problems)")
        #expect(topo.l3Groups == ["0-1", "2-3"])
        #expect(topo.numaNodes == ["0-3"])
        #expect(outcome.problems.isEmpty, "\(outcome.problems)")
    }
}
