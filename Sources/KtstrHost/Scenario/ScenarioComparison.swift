import KtstrMachine
import KtstrProtocol

/// A scenario run under a scheduler and under a baseline (EEVDF: no sched_ext scheduler) on
/// the same VM configuration, with the scheduler's numbers over the baseline's.
public struct ScenarioComparison: Codable, Sendable {
    /// scheduler ÷ baseline; nil when either side has nothing to divide (no report, a zero).
    public struct Ratios: Codable, Sendable, Equatable {
        /// Total iterations of every worker: above 1, the scheduler got more work done.
        public var throughput: Double?
        /// Mean run delay (time runnable but waiting): above 1, tasks waited longer.
        public var runDelay: Double?
        /// Mean p99 wake latency of the wake-measuring workers: above 1, slower wakeups.
        public var wakeLatencyP99: Double?

        public init(throughput: Double?, runDelay: Double?, wakeLatencyP99: Double?) {
            self.throughput = throughput; self.runDelay = runDelay; self.wakeLatencyP99 = wakeLatencyP99
        }

        public init(scheduler: ScenarioReport?, baseline: ScenarioReport?) {
            func ratio(_ a: Double?, _ b: Double?) -> Double? {
                guard let a, let b, b > 0, a.isFinite, b.isFinite else { return nil }
                return a / b
            }
            throughput = ratio(scheduler.map { Double($0.totalIterations) }, baseline.map { Double($0.totalIterations) })
            runDelay = ratio(scheduler?.meanRunDelayMillis, baseline?.meanRunDelayMillis)
            wakeLatencyP99 = ratio(scheduler?.meanWakeP99Millis, baseline?.meanWakeP99Millis)
        }
    }

    public var scheduler: RunOutcome
    public var baseline: RunOutcome
    public var ratios: Ratios

    public init(scheduler: RunOutcome, baseline: RunOutcome) {
        self.scheduler = scheduler; self.baseline = baseline
        ratios = Ratios(scheduler: scheduler.scenario, baseline: baseline.scenario)
    }
}

extension SchedulerSpec {
    /// The kernel's own fair scheduler (EEVDF): no sched_ext scheduler loaded. The baseline.
    public static var eevdf: SchedulerSpec { .none }
}

extension SchedulerRun {
    /// Runs `scenario` under `scheduler`, then under `baseline`, one VM each with the same
    /// configuration (one after the other, so neither steals the other's host CPU), and
    /// compares them. Artifacts go to `<dir>/scheduler` and `<dir>/baseline`.
    public static func compare(vm: VMConfig, scheduler: SchedulerSpec, baseline: SchedulerSpec = .eevdf, scenario: Scenario,
                               duration: Duration = .seconds(3), artifactsDirectory: String?, log: Log,
                               partialOutcomeOnCancel: Bool = false) async throws -> ScenarioComparison {
        let a = try await run(vm: vm, scheduler: scheduler, workload: .idle, duration: duration,
                              artifactsDirectory: artifactsDirectory.map { $0 + "/scheduler" }, log: log,
                              partialOutcomeOnCancel: partialOutcomeOnCancel, scenario: scenario)
        let b = try await run(vm: vm, scheduler: baseline, workload: .idle, duration: duration,
                              artifactsDirectory: artifactsDirectory.map { $0 + "/baseline" }, log: log,
                              partialOutcomeOnCancel: partialOutcomeOnCancel, scenario: scenario)
        return ScenarioComparison(scheduler: a, baseline: b)
    }
}
