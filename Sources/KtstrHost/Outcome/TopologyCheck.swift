import KtstrMachine
import KtstrProtocol

extension Topology {
    /// What the guest kernel should report for this topology: one L3 group per LLC, the
    /// nodes' CPUs in order (one node holding every CPU without NUMA).
    public var expectedGuestTopology: GuestTopology {
        GuestTopology(l3Groups: llcCPUs.map { GuestTopology.list($0) }, numaNodes: nodeCPUs.map { GuestTopology.list($0) })
    }
}

extension RunOutcome {
    /// Compares the guest's reported topology with `requested` and records a
    /// `topologyMismatch` problem for any difference. Nothing to compare when the agent did not
    /// report one (an older agent).
    public mutating func checkTopology(requested: Topology) {
        guard let guest = guestTopology, let why = Self.topologyDifference(requested: requested, guest: guest) else { return }
        problems.append(RunProblem(.topologyMismatch, why))
    }

    /// One line saying how `guest` differs from `requested`, or nil when it matches.
    public static func topologyDifference(requested: Topology, guest: GuestTopology) -> String? {
        let want = requested.expectedGuestTopology
        var diffs: [String] = []
        if want.normalized.l3 != guest.normalized.l3 {
            diffs.append("L3 groups \(show(guest.l3Groups)), expected \(show(want.l3Groups))")
        }
        if want.normalized.nodes != guest.normalized.nodes {
            diffs.append("NUMA nodes \(show(guest.numaNodes)), expected \(show(want.numaNodes))")
        }
        return diffs.isEmpty ? nil : "asked \(requested): guest has " + diffs.joined(separator: "; ")
    }

    private static func show(_ lists: [String]) -> String { lists.isEmpty ? "none" : lists.map { "[\($0)]" }.joined(separator: " ") }
}
