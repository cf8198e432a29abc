/// /ktstr/plan.json: what the agent runs (docs/PROTOCOLS.md "plan.json"). The host writes it
/// with `encoded()`, the agent reads it with `decode(_:)` (RunPlanDecoding.swift). Codable
/// too, for callers that embed it; that encoding decodes the same.
public struct RunPlan: Codable, Sendable, Equatable {
    public struct Scheduler: Codable, Sendable, Equatable {
        public var path: String
        public var args: [String]
        public var name: String
        public init(path: String, args: [String], name: String) { self.path = path; self.args = args; self.name = name }
    }

    public struct Workload: Codable, Sendable, Equatable {
        /// A `WorkloadKind` raw value; a String so that a plan with a newer kind still
        /// encodes (the agent rejects it with a problem).
        public var kind: String
        public var count: Int
        public var periodMicros: Int?
        public var cgroup: String?
        public init(kind: String, count: Int, periodMicros: Int? = nil, cgroup: String? = nil) {
            self.kind = kind; self.count = count; self.periodMicros = periodMicros; self.cgroup = cgroup
        }
        public init(kind: WorkloadKind, count: Int, periodMicros: Int? = nil, cgroup: String? = nil) {
            self.init(kind: kind.rawValue, count: count, periodMicros: periodMicros, cgroup: cgroup)
        }
        /// `kind` as the enum; nil for a kind this code does not know (`decode` rejects those).
        public var workloadKind: WorkloadKind? { WorkloadKind(rawValue: kind) }
    }

    /// Plan mode `shell` (`ktstr shell`): instead of a workload, start the scheduler, run
    /// busybox `/bin/sh` on the console (ttyS0) — interactive, or `sh -c command` — wait for it,
    /// stop the scheduler, power off. nil: the ordinary run.
    public struct Shell: Codable, Sendable, Equatable {
        /// `sh -c command`; nil: an interactive shell.
        public var command: String?
        /// The host terminal's TERM, rows and columns (the guest shell's TERM, LINES, COLUMNS).
        public var term: String?
        public var rows: Int?
        public var columns: Int?
        public init(command: String? = nil, term: String? = nil, rows: Int? = nil, columns: Int? = nil) {
            self.command = command; self.term = term; self.rows = rows; self.columns = columns
        }
        /// The busybox binary in the initramfs (from Debian's busybox-static).
        public static let busyboxPath = "/bin/busybox"
        /// Console lines the agent writes around the shell's session: the host shows what lies
        /// between them (boot messages before, shutdown after, stay out of the user's terminal).
        public static let beginMarker = "\u{1}KTSTR-SHELL-BEGIN\u{2}"
        public static let endMarker = "\u{1}KTSTR-SHELL-END\u{2}"
    }

    public var scheduler: Scheduler?
    public var workload: Workload
    /// nil: the ordinary run; set: plan mode `shell` (`"mode": "shell"` in plan.json).
    public var shell: Shell?
    public var durationMillis: Int
    public var kallsyms: [String]
    public var attachTimeoutMillis: Int
    /// The agent's own hard limit; past it it reports a problem and reboots. nil: the agent
    /// derives one (`agentDeadlineMillis`).
    public var deadlineMillis: Int?
    /// Set: the agent runs this scenario instead of `workload` (docs/PROTOCOLS.md "Scenarios").
    public var scenario: Scenario?

    public init(scheduler: Scheduler?, workload: Workload, durationMillis: Int, kallsyms: [String],
                attachTimeoutMillis: Int, deadlineMillis: Int? = nil, scenario: Scenario? = nil) {
        self.scheduler = scheduler; self.workload = workload; self.durationMillis = durationMillis
        self.kallsyms = kallsyms; self.attachTimeoutMillis = attachTimeoutMillis; self.deadlineMillis = deadlineMillis
        self.scenario = scenario
    }

    /// How long the workload runs: the scenario's duration when it sets one, else `durationMillis`.
    public var runMillis: Int { scenario?.durationMillis ?? durationMillis }

    /// The deadline the agent arms: `deadlineMillis`, else the run's length + attach timeout + 60 s.
    public var agentDeadlineMillis: Int { deadlineMillis ?? runMillis + attachTimeoutMillis + 60_000 }

    /// Explicit nulls (the agent's decoder treats absent and null alike, but the contract shows null).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(scheduler, forKey: .scheduler)
        try c.encode(workload, forKey: .workload)
        try c.encode(durationMillis, forKey: .durationMillis)
        try c.encode(kallsyms, forKey: .kallsyms)
        try c.encode(attachTimeoutMillis, forKey: .attachTimeoutMillis)
        try c.encodeIfPresent(deadlineMillis, forKey: .deadlineMillis)
        try c.encodeIfPresent(shell, forKey: .shell)
        try c.encodeIfPresent(scenario, forKey: .scenario)
    }

    /// plan.json's bytes, fields in the order docs/PROTOCOLS.md shows, explicit nulls.
    public func encoded() -> [UInt8] { Array(json.encoded().utf8) }

    public var json: JSON {
        let sched: JSON = scheduler.map { s in
            .object([("path", .string(s.path)), ("args", .array(s.args.map(JSON.string))), ("name", .string(s.name))])
        } ?? .null
        let w = workload
        var fields: [(String, JSON)] = [
            ("scheduler", sched),
            ("workload", .object([("kind", .string(w.kind)), ("count", .int(w.count)),
                                  ("periodMicros", w.periodMicros.map(JSON.int) ?? .null),
                                  ("cgroup", w.cgroup.map(JSON.string) ?? .null)])),
            ("durationMillis", .int(durationMillis)),
            ("kallsyms", .array(kallsyms.map(JSON.string))),
            ("attachTimeoutMillis", .int(attachTimeoutMillis)),
        ]
        if let deadlineMillis { fields.append(("deadlineMillis", .int(deadlineMillis))) }
        if let shell {
            fields.append(("mode", .string("shell")))
            fields.append(("shell", .object([("command", shell.command.map(JSON.string) ?? .null),
                                             ("term", shell.term.map(JSON.string) ?? .null),
                                             ("rows", shell.rows.map(JSON.int) ?? .null),
                                             ("columns", shell.columns.map(JSON.int) ?? .null)])))
        }
        if let scenario { fields.append(("scenario", scenario.json)) }
        return .object(fields)
    }
}
