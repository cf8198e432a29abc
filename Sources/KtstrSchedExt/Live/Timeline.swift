/// What the host sampled from a running guest's scheduler state, without its help: one
/// `TimelineSample` every interval, read from guest RAM (issue 13). Codable: `RunOutcome`
/// keeps a bounded copy, the artifacts the full one, and the SVG is drawn from it.
public struct Timeline: Codable, Sendable, Equatable {
    /// The sampling period asked for.
    public var intervalMillis: Int
    /// Oldest first. `millis` counts from the start of sampling (host clock).
    public var samples: [TimelineSample]
    /// Things that happened at a moment: the scheduler enabled, a phase, a stall the host
    /// saw, the scheduler's exit.
    public var markers: [TimelineMarker]
    /// Samples left out to stay within a bound (the outcome's copy keeps every n-th).
    public var droppedSamples: Int
    /// Host time spent reading samples, in total (the sampler's cost).
    public var samplingMillis: Double
    /// What the sampler could not read (no BTF yet, a layout this kernel lacks); nil when none.
    public var problems: [String]?

    public init(intervalMillis: Int, samples: [TimelineSample] = [], markers: [TimelineMarker] = [],
                droppedSamples: Int = 0, samplingMillis: Double = 0, problems: [String]? = nil) {
        self.intervalMillis = intervalMillis; self.samples = samples; self.markers = markers
        self.droppedSamples = droppedSamples; self.samplingMillis = samplingMillis; self.problems = problems
    }
}

public struct TimelineSample: Codable, Sendable, Equatable {
    public var millis: Int
    /// One per possible CPU, by CPU number.
    public var cpus: [CPUSample]
    /// Depth of each user DSQ the scheduler created, by DSQ id; nil when not read.
    public var dsqDepths: [String: Int]?
    /// sched_ext event counters (`scx_event_stats` fields, summed over CPUs), by field name;
    /// nil when the kernel's BTF has none.
    public var events: [String: Int64]?

    public init(millis: Int, cpus: [CPUSample], dsqDepths: [String: Int]? = nil, events: [String: Int64]? = nil) {
        self.millis = millis; self.cpus = cpus; self.dsqDepths = dsqDepths; self.events = events
    }
}

public struct CPUSample: Codable, Sendable, Equatable {
    /// `rq->nr_running`.
    public var nrRunning: UInt32
    /// `rq->scx.nr_running`.
    public var scxNrRunning: UInt32
    /// `rq->scx.local_dsq.nr`.
    public var localDSQDepth: UInt32
    /// `rq->curr`: pid and comm (pid 0 is the idle task).
    public var currentPID: Int32?
    public var currentComm: String?
    /// `rq->clock` (ns); stops advancing on a CPU that does not get ticks or schedule.
    public var rqClock: UInt64
    /// The task that has waited longest on this CPU's `rq->scx.runnable_list` (what the
    /// kernel's watchdog checks), with its wait (`jiffies - p->scx.runnable_at`); nil when the
    /// list is empty or was not read.
    public var oldestRunnable: RunnableWait?

    public init(nrRunning: UInt32, scxNrRunning: UInt32, localDSQDepth: UInt32, currentPID: Int32?,
                currentComm: String?, rqClock: UInt64, oldestRunnable: RunnableWait? = nil) {
        self.nrRunning = nrRunning; self.scxNrRunning = scxNrRunning; self.localDSQDepth = localDSQDepth
        self.currentPID = currentPID; self.currentComm = currentComm; self.rqClock = rqClock
        self.oldestRunnable = oldestRunnable
    }
}

/// A runnable task and how long it has waited to run (guest jiffies converted with CONFIG_HZ).
public struct RunnableWait: Codable, Sendable, Equatable {
    public var pid: Int32
    public var comm: String
    public var waitMillis: Int

    public init(pid: Int32, comm: String, waitMillis: Int) { self.pid = pid; self.comm = comm; self.waitMillis = waitMillis }
}

extension Timeline {
    /// At most `maxSamples` samples, evenly spread over the whole run (first and last kept);
    /// the ones left out are added to `droppedSamples`. Markers and the cost are kept.
    public func bounded(to maxSamples: Int) -> Timeline {
        guard maxSamples >= 2, samples.count > maxSamples else { return self }
        var out = self
        let n = samples.count
        out.samples = (0..<maxSamples).map { samples[$0 * (n - 1) / (maxSamples - 1)] }
        out.droppedSamples += n - maxSamples
        return out
    }
}

public struct TimelineMarker: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case schedulerEnabled = "scheduler_enabled"
        case phase
        case hostStall = "host_stall"
        case bpfWrite = "bpf_write"
        case schedulerExit = "scheduler_exit"
    }

    public var millis: Int
    public var kind: Kind
    /// Short text for the picture ("error_stall", "phase 2", "cpu 1: exe[102]").
    public var label: String
    /// The CPU it concerns, if one.
    public var cpu: Int?

    public init(millis: Int, kind: Kind, label: String, cpu: Int? = nil) {
        self.millis = millis; self.kind = kind; self.label = label; self.cpu = cpu
    }
}
