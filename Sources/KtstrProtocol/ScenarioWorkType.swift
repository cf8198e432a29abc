/// What a scenario worker does (`ScenarioWorkers.work`): each a behaviour a scheduler must
/// handle. The agent's WorkTypes.swift implements them; docs/PROTOCOLS.md "Scenarios" says
/// what one iteration of each is.
public enum WorkType: String, Codable, Sendable, CaseIterable {
    /// A busy loop.
    case spin
    /// sched_yield with a little work between.
    case yield
    /// Pairs waking each other through a futex; the wakee measures the wake latency.
    case futexPingPong = "futex_ping_pong"
    /// Pairs bouncing a timestamp over two pipes; the reader measures the wake latency.
    case pipePingPong = "pipe_ping_pong"
    /// Periodic sleep/wake on an absolute timer; wake lateness is the wake latency.
    case timerSleep = "timer_sleep"
    /// fork, exit, wait.
    case forkChurn = "fork_churn"
    /// mmap fresh anonymous memory, touch every page, munmap.
    case pageFault = "page_fault"
    /// Strided walks over a working set larger than the LLC.
    case cachePressure = "cache_pressure"
    /// A blocking read on a pipe a timer-driven writer feeds (an I/O-like wait).
    case ioWait = "io_wait"
    /// Cycles its own nice through -5...19 while spinning.
    case niceSweep = "nice_sweep"
    /// sched_setaffinity to changing subsets of its allowed CPUs.
    case affinityChurn = "affinity_churn"
    /// Cycles SCHED_OTHER, SCHED_BATCH, SCHED_IDLE while spinning.
    case policyChurn = "policy_churn"
    /// A parent wakes its children, each computes a burst, the parent waits for all.
    case fanOut = "fan_out"

    /// Kinds whose workers record wake latency (p50/p99/max in `WorkerMetrics`).
    public var measuresWakeLatency: Bool {
        switch self {
        case .futexPingPong, .pipePingPong, .timerSleep, .ioWait, .fanOut: true
        default: false
        }
    }
}
