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

    /// Every preset: scx_simple runs, and the guest sees exactly the requested L3 groups and
    /// nodes (a mismatch would be a problem). Test names show the preset ("2llc").
    @Test(arguments: [Topology.single, .flat2, .twoLLCs, .twoNodes, .smtPairs])
    func everyPresetIsWhatTheGuestSees(_ topology: Topology) async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .spinners(4), duration: .seconds(1), topology: topology)
        outcome.expectNoSchedulerError()
        outcome.expectAllWorkersRan()
        #expect(outcome.guestTopology == topology.expectedGuestTopology)
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

/// The failure monitor reads a NUMA guest's RAM (one file per node, joined in one mapping):
/// a BPF error on the 2-node topology is dumped like on one node, with the per-CPU data of
/// all four vCPUs (runqueues live in each node's memory).
@Suite(.ktstr(memoryMiB: 512, topology: .twoNodes))
struct NUMAFailureDump {
    @Test func bpfErrorOnTwoNodesIsDumped() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--error-after", "100"), workload: .spinners(4))
        outcome.expectSchedulerExit(.errorBPF, messageContains: "ktstr fault: error after 100 enqueues")
        let dump = try #require(outcome.failureDump, "no failure dump; problems: \(outcome.problems)")
        #expect(dump.kind == .errorBPF)
        #expect(dump.registers.map(\.cpu) == [0, 1, 2, 3])
        #expect(dump.cpus.count == 4)
        #expect(dump.backtrace.compactMap(\.symbol).contains { $0.hasPrefix("scx_bpf_error_bstr+") }, "\(dump.backtrace)")
        #expect(dump.map(named: ".bss")?.variable("ktstr_knob_error_after")?.integer == 100)
        #expect(dump.problems.isEmpty, "\(dump.problems)")
        #expect(outcome.guestTopology?.numaNodes == ["0-1", "2-3"])
    }
}
