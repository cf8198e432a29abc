/// The scheduler's exit as the kernel recorded it (`struct scx_exit_info`).
public struct SchedulerExit: Codable, Sendable, Equatable {
    public var kind: ExitKind
    /// Numeric `enum scx_exit_kind` value (≥ 1024 is an error).
    public var kindValue: Int
    /// `exit_code` (scx_bpf_exit's code, or the loader's).
    public var code: Int64
    /// The kernel's reason string ("scx_bpf_error", "runnable task stall"...).
    public var reason: String
    /// The message (scx_bpf_error's formatted text, the stall description...).
    public var message: String

    public init(kind: ExitKind, kindValue: Int, code: Int64 = 0, reason: String = "", message: String = "") {
        self.kind = kind; self.kindValue = kindValue; self.code = code; self.reason = reason; self.message = message
    }

    public var isError: Bool { kindValue >= ExitKind.errorThreshold }
}

/// One workload worker's view of the run, from /proc/<pid>/schedstat and /proc/<pid>/stat.
public struct WorkerStats: Codable, Sendable, Equatable {
    public var index: Int
    public var pid: Int
    /// Time on CPU (schedstat field 1).
    public var cpuNanos: UInt64
    /// Time runnable but waiting (schedstat field 2).
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
