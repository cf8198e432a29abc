/// A stall the host saw in the sampled runqueues, before (or without) the kernel's watchdog.
public struct HostStall: Sendable, Equatable {
    public enum Cause: String, Sendable, Equatable {
        /// The CPU's `rq->clock` fell behind the newest CPU clock while it had runnable tasks.
        case clockStopped = "clock_stopped"
        /// A task on `rq->scx.runnable_list` waited (`jiffies - runnable_at`) past the threshold.
        case taskWaiting = "task_waiting"
    }

    public var cause: Cause
    public var cpu: Int
    /// The task concerned: the waiting one, or for a stopped clock the oldest runnable (else
    /// the current) task.
    public var pid: Int32?
    public var comm: String?
    /// How long (guest time, ms): the wait, or how far the clock lags.
    public var stalledMillis: Int
    /// Timeline time (ms from the start of sampling) of the sample that showed it.
    public var detectedAtMillis: Int
    /// The last few samples of that CPU, one short clause each.
    public var excerpt: [String]

    /// One line: the CPU, the task, how long.
    public var summary: String {
        let task = pid.map { "\(comm ?? "?")[\($0)]" } ?? "no task seen"
        let secs = Double(stalledMillis) / 1000
        let how = secs.fixed(1)
        return switch cause {
        case .taskWaiting: "cpu \(cpu): \(task) runnable for \(how) s without running"
        case .clockStopped: "cpu \(cpu): rq clock stopped \(how) s behind the other CPUs with tasks runnable (\(task))"
        }
    }
}

/// Host-side stall detection over `TimelineSample`s (pure: the sampler feeds it, tests feed
/// it synthetic samples). Guest time only (rq clocks, jiffies): a host that stalls qemu, or a
/// freeze, stops every guest clock alike and is never taken for a stall.
///
/// Reports each CPU at most once for its clock and each task (pid) at most once for its wait.
/// Only `active` samples are judged (a scheduler attached that has not exited).
public struct StallDetector: Sendable {
    public var thresholdMillis: Int
    /// Samples of history kept for the excerpt.
    public var excerptLength: Int
    private var recent: [TimelineSample] = []
    private var reportedCPUs: Set<Int> = []
    private var reportedPIDs: Set<Int32> = []

    public init(thresholdMillis: Int = 2000, excerptLength: Int = 5) {
        self.thresholdMillis = max(1, thresholdMillis); self.excerptLength = max(1, excerptLength)
    }

    public mutating func observe(_ sample: TimelineSample, active: Bool) -> [HostStall] {
        recent.append(sample)
        if recent.count > excerptLength { recent.removeFirst(recent.count - excerptLength) }
        guard active else { return [] }
        var found: [HostStall] = []
        let newest = sample.cpus.map(\.rqClock).max() ?? 0
        let thresholdNanos = UInt64(thresholdMillis) * 1_000_000
        for (cpu, c) in sample.cpus.enumerated() {
            if let w = c.oldestRunnable, w.waitMillis >= thresholdMillis, !reportedPIDs.contains(w.pid) {
                reportedPIDs.insert(w.pid)
                found.append(HostStall(cause: .taskWaiting, cpu: cpu, pid: w.pid, comm: w.comm, stalledMillis: w.waitMillis,
                                       detectedAtMillis: sample.millis, excerpt: excerpt(cpu: cpu)))
            }
            if c.nrRunning > 0, newest > c.rqClock, newest - c.rqClock >= thresholdNanos, !reportedCPUs.contains(cpu) {
                reportedCPUs.insert(cpu)
                let task = c.oldestRunnable.map { ($0.pid, $0.comm) } ?? c.currentPID.map { ($0, c.currentComm ?? "?") }
                found.append(HostStall(cause: .clockStopped, cpu: cpu, pid: task?.0, comm: task?.1,
                                       stalledMillis: Int((newest - c.rqClock) / 1_000_000),
                                       detectedAtMillis: sample.millis, excerpt: excerpt(cpu: cpu)))
            }
        }
        return found
    }

    /// `+1900ms nr 2 scx 2 local 0 curr ktstr-spinn0[60] clock +4ms oldest ktstr-spinn1[61] 1.9s`
    func excerpt(cpu: Int) -> [String] {
        var out: [String] = []
        var previous: UInt64?
        for s in recent where cpu < s.cpus.count {
            let c = s.cpus[cpu]
            var line = "+\(s.millis)ms nr \(c.nrRunning) scx \(c.scxNrRunning) local \(c.localDSQDepth)"
            line += " curr " + (c.currentPID.map { "\(c.currentComm ?? "?")[\($0)]" } ?? "?")
            if let p = previous {
                line += c.rqClock == p ? " clock stopped" : " clock +\(Int64(bitPattern: c.rqClock &- p) / 1_000_000)ms"
            }
            if let w = c.oldestRunnable { line += " oldest \(w.comm)[\(w.pid)] \(Double(w.waitMillis) / 1000)s" }
            previous = c.rqClock
            out.append(line)
        }
        return out
    }
}

extension Double {
    func fixed(_ decimals: Int) -> String {
        var p = 1.0
        for _ in 0..<max(0, decimals) { p *= 10 }
        let r = (self * p).rounded() / p
        return decimals == 0 ? String(Int(r)) : String(r)
    }
}
