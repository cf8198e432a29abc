import KtstrMachine
import KtstrSchedExt
import KtstrProtocol

/// What one scheduler run produced. Codable: `ktstr run --json` prints it, tests attach it.
public struct RunOutcome: Codable, Sendable {
    public var backend: BackendKind
    /// `uname -r` of the guest, from the agent's hello (nil when the guest never said hello).
    public var kernelRelease: String?
    /// Host start of the VM → agent hello.
    public var bootMillis: Int?
    /// Host start of the VM → VM gone.
    public var wallMillis: Int
    /// How the scheduler exited; nil when it never started (see `problems`). `source` says
    /// where it was read: guest memory (the kernel's exit record) first, else the agent's
    /// report (the loader's line, the kernel log).
    public var schedulerExit: SchedulerExit?
    /// Read from the frozen guest when the scheduler exited with an error-class kind.
    public var failureDump: FailureDump?
    public var workers: [WorkerStats]
    /// Worker processes the workload asked for (ping-pong: 2 per pair); nil when unknown.
    public var requestedWorkers: Int?
    /// Last lines of the kernel console (COM1).
    public var consoleTail: String
    /// The scheduler's own stdout/stderr, as the agent reported it (tail).
    public var schedulerLog: String?
    /// How the machine ended.
    public var machineExit: MachineExit
    /// Things that went wrong around the run (guest died early, agent error, timeouts).
    public var problems: [RunProblem]
    /// Port and MMIO accesses no device handled, per port / address (the own VMM counts them;
    /// nil on qemu, which cannot).
    public var unhandledAccesses: UnhandledAccesses?
    /// What the host sampled from guest memory during the run, bounded (≤ 600 samples, evenly
    /// thinned; `droppedSamples` says how many were left out). nil when not sampled.
    /// `RunArtifacts` draws it as timeline.svg.
    public var timeline: Timeline?
    /// The full timeline: kept in memory for the artifacts (`timeline.json`), never in the
    /// outcome's JSON (RunOutcome+Timeline.swift).
    @NotEncoded public var fullTimeline: Timeline? = nil
    /// Writes to the guest's BPF maps made during the run (`during:` closure, `--bpf-set`),
    /// oldest first, with host times; nil when none. Each is also a `bpf_write` marker on the
    /// timeline.
    public var bpfWrites: [BPFWrite]?
    /// Host milliseconds from the VM's start to the agent's `sched_enabled`, and to the host
    /// first seeing the scheduler's exit record in guest memory.
    public var schedulerEnabledMillis: Int?
    public var exitSeenMillis: Int?
    /// What `watchdogTimeout` did (nil when not asked for).
    public var watchdogOverride: WatchdogOverride.Report?
    /// The CPU topology the guest kernel reported in its hello (L3 groups, NUMA nodes); nil
    /// from an agent that does not report it. A difference from the requested topology is a
    /// `topologyMismatch` problem.
    public var guestTopology: GuestTopology?
    /// A scenario run (`SchedulerRun.run(scenario:)`): what the agent measured, per worker,
    /// cgroup and phase (`scenario.phases`); nil for a plain workload or when the agent sent
    /// no report (a `scenario_not_reported` problem).
    public var scenario: ScenarioReport?
    /// The scenario's cgroups with their share of the CPU (`CgroupShares.shares`).
    public var cgroups: [CgroupShare]?
    /// The scenario's checks, evaluated on the host (`ScenarioChecks`); every one fails, saying
    /// so, when there is no report.
    public var checks: [CheckResult]?
    /// How the VM came up when a boot snapshot was to be used (QEMU, `KTSTR_SNAPSHOT` not
    /// off): restored, or booted cold after a `snapshotFallback`. nil: an ordinary cold boot.
    public var snapshot: SnapshotUse?

    public init(backend: BackendKind, kernelRelease: String? = nil, bootMillis: Int? = nil,
                wallMillis: Int, schedulerExit: SchedulerExit? = nil, failureDump: FailureDump? = nil,
                workers: [WorkerStats] = [], requestedWorkers: Int? = nil, consoleTail: String = "", schedulerLog: String? = nil,
                machineExit: MachineExit = .shutdown, problems: [RunProblem] = []) {
        self.backend = backend; self.kernelRelease = kernelRelease; self.bootMillis = bootMillis
        self.wallMillis = wallMillis; self.schedulerExit = schedulerExit; self.failureDump = failureDump
        self.workers = workers; self.requestedWorkers = requestedWorkers; self.consoleTail = consoleTail; self.schedulerLog = schedulerLog
        self.machineExit = machineExit; self.problems = problems
    }
}

