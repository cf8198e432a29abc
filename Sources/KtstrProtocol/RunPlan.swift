/// /ktstr/plan.json: what the agent runs (docs/PROTOCOLS.md "plan.json").
public struct RunPlan: Codable, Sendable, Equatable {
    public struct Scheduler: Codable, Sendable, Equatable {
        public var path: String
        public var args: [String]
        public var name: String
        public init(path: String, args: [String], name: String) { self.path = path; self.args = args; self.name = name }
    }

    public struct Workload: Codable, Sendable, Equatable {
        /// spinners, sleepers, ping_pong, fork_storm, idle.
        public var kind: String
        public var count: Int
        public var periodMicros: Int?
        public var cgroup: String?
        public init(kind: String, count: Int, periodMicros: Int? = nil, cgroup: String? = nil) {
            self.kind = kind; self.count = count; self.periodMicros = periodMicros; self.cgroup = cgroup
        }
    }

    public var scheduler: Scheduler?
    public var workload: Workload
    public var durationMillis: Int
    public var kallsyms: [String]
    public var attachTimeoutMillis: Int
    /// The agent's own hard limit; past it it reports a problem and reboots. nil: the agent
    /// derives one (duration + attach timeout + 60 s).
    public var deadlineMillis: Int?

    public init(scheduler: Scheduler?, workload: Workload, durationMillis: Int, kallsyms: [String],
                attachTimeoutMillis: Int, deadlineMillis: Int? = nil) {
        self.scheduler = scheduler; self.workload = workload; self.durationMillis = durationMillis
        self.kallsyms = kallsyms; self.attachTimeoutMillis = attachTimeoutMillis; self.deadlineMillis = deadlineMillis
    }

    /// Explicit nulls (the agent's decoder treats absent and null alike, but the contract shows null).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(scheduler, forKey: .scheduler)
        try c.encode(workload, forKey: .workload)
        try c.encode(durationMillis, forKey: .durationMillis)
        try c.encode(kallsyms, forKey: .kallsyms)
        try c.encode(attachTimeoutMillis, forKey: .attachTimeoutMillis)
        try c.encodeIfPresent(deadlineMillis, forKey: .deadlineMillis)
    }
}
