/// What the agent's workers do (docs/PROTOCOLS.md "plan.json"). The raw values are the
/// plan's `workload.kind` strings.
public enum WorkloadKind: String, Codable, Sendable, CaseIterable {
    /// Busy loops.
    case spinners
    /// Sleep `periodMicros`, wake, repeat.
    case sleepers
    /// Pairs bouncing a byte over two FIFOs (`count` is pairs).
    case pingPong = "ping_pong"
    /// fork + wait in a loop.
    case forkStorm = "fork_storm"
    /// No workers.
    case idle
}
