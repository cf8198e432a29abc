/// Where a `SchedulerExit` was read: the kernel's exit record in guest memory (the truth),
/// the scheduler loader's output, or the kernel log (which carries no exit code).
public enum ExitSource: String, Codable, Sendable, Equatable {
    /// `scx_sched->exit_info`, read by the host from guest RAM.
    case memory
    /// The loader's `KTSTR_EXIT` line (has the code) or `EXIT: reason (msg)` line (does not).
    case loader
    /// The kernel's `sched_ext: BPF scheduler "…" disabled (…)` line in /dev/kmsg.
    case kernelLog = "kmsg"
}

/// The scheduler's exit as the kernel recorded it (`struct scx_exit_info`). A field nil is
/// unknown (JSON null): the source it came from did not carry it.
public struct SchedulerExit: Codable, Sendable, Equatable {
    public var kind: ExitKind
    /// Numeric `enum scx_exit_kind` value (≥ 1024 is an error); nil when the kind was
    /// recovered from text the exit-kind table does not know.
    public var kindValue: Int?
    /// `exit_code` (scx_bpf_exit's code, or the loader's); nil when the source had none
    /// (a loader's `EXIT:` line, the kernel log).
    public var code: Int64?
    /// The kernel's reason string ("scx_bpf_error", "runnable task stall"...).
    public var reason: String
    /// The message (scx_bpf_error's formatted text, the stall description...).
    public var message: String
    /// Where this exit was read; nil when not recorded (older outcomes).
    public var source: ExitSource?

    public init(kind: ExitKind, kindValue: Int?, code: Int64? = nil, reason: String = "", message: String = "",
                source: ExitSource? = nil) {
        self.kind = kind; self.kindValue = kindValue; self.code = code; self.reason = reason; self.message = message
        self.source = source
    }

    public var isError: Bool { (kindValue ?? kind.value ?? 0) >= ExitKind.errorThreshold }

    private enum CodingKeys: String, CodingKey { case kind, kindValue, code, reason, message, source }

    /// Unknown fields are written as null, not left out: "unknown" must read as such.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(kindValue, forKey: .kindValue)
        try c.encode(code, forKey: .code)
        try c.encode(reason, forKey: .reason)
        try c.encode(message, forKey: .message)
        try c.encode(source, forKey: .source)
    }
}

/// One workload worker's view of the run, from /proc/<pid>/schedstat and /proc/<pid>/stat.
public struct WorkerStats: Codable, Sendable, Equatable {
    public var index: Int
    public var pid: Int
    /// Time on CPU (schedstat field 1).
    public var cpuNanos: UInt64
    /// Time runnable but waiting: schedstat field 2 (run_delay, which grows only when the
    /// task next runs) plus the wait in progress when sampled (runnable, no progress since).
    public var waitNanos: UInt64
    /// Number of times it ran (schedstat field 3).
    public var runs: UInt64
    /// Work units the worker completed (loop iterations, ping-pongs, forks).
    public var iterations: UInt64
    /// CPU it last ran on.
    public var lastCPU: Int?

    public init(index: Int, pid: Int, cpuNanos: UInt64, waitNanos: UInt64, runs: UInt64, iterations: UInt64, lastCPU: Int? = nil) {
        self.index = index; self.pid = pid; self.cpuNanos = cpuNanos; self.waitNanos = waitNanos
        self.runs = runs; self.iterations = iterations; self.lastCPU = lastCPU
    }
}
