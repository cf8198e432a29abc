import Foundation
import Synchronization
import KtstrMachine
import KtstrSchedExt
import KtstrProtocol

/// What a `.ktstr(...)` trait hands its test body.
public final class KtstrContext: Sendable {
    /// The VM shape every `Ktstr.run` in this test boots.
    public let vm: VMConfig
    public let testName: String
    /// `.build/ktstr/<test>/`: console logs, outcomes and dumps of every run, kept always.
    public let artifactsDirectory: String
    /// From `.ktstr(watchdogTimeout:)`: applied to every run of the test.
    public let watchdogTimeout: Duration?
    private let outcomes = Mutex<[RunOutcome]>([])

    init(vm: VMConfig, testName: String, watchdogTimeout: Duration? = nil) {
        self.vm = vm
        self.testName = testName
        self.watchdogTimeout = watchdogTimeout
        self.artifactsDirectory = KtstrContext.artifactsRoot() + "/" + testName
    }

    /// Runs recorded so far, oldest first.
    public var runs: [RunOutcome] { outcomes.withLock { $0 } }

    func record(_ outcome: RunOutcome) -> Int {
        outcomes.withLock { $0.append(outcome); return $0.count }
    }

    /// `KTSTR_ARTIFACTS_DIR`, else `.build/ktstr` under the current directory (the package
    /// root under `swift test`).
    static func artifactsRoot() -> String {
        if let d = KtstrSettings.current.artifactsDirectory { return d }
        return FileManager.default.currentDirectoryPath + "/.build/ktstr"
    }

    /// Attaches each run's console, outcome and failure dump to the current test.
    func attachArtifacts(reason: String) {
        for (i, o) in runs.enumerated() {
            let tag = runs.count > 1 ? "-run\(i + 1)" : ""
            for f in RunArtifacts.files(of: o) { Attachment.record(f.contents, named: "\(testName)\(tag)-\(f.name)") }
        }
    }
}

public enum Ktstr {
    /// The innermost `.ktstr(...)` trait's context; nil outside such a test.
    @TaskLocal public static var current: KtstrContext?

    /// Boots a fresh VM (the enclosing `.ktstr(...)` trait's shape, or the defaults), loads
    /// `scheduler`, runs `workload` for `duration`, and returns what happened. The outcome is
    /// written under `.build/ktstr/<test>/run<N>/` (by SchedulerRun, once) and attached to the test if it fails.
    ///
    /// Throws only for infrastructure failures (no kernel, qemu died before the guest spoke);
    /// a kernel without sched_ext, when a scheduler is requested, skips the test with the reason;
    /// a scheduler that errors is a normal outcome to assert on.
    /// `topology` overrides the trait's for this run (for tests parameterized over topologies).
    /// `watchdogTimeout` overrides the trait's. `during` runs concurrently with the workload
    /// once the scheduler is enabled, with a handle on the live guest (`LiveVM`: sleep, read
    /// and write BPF maps); its writes are in `outcome.bpfWrites`, an error it throws is a
    /// `live_handle` problem of the outcome.
    public static func run(scheduler: SchedulerSpec, workload: WorkloadSpec = .spinners(2),
                           duration: Duration = .seconds(3), topology: Topology? = nil,
                           watchdogTimeout: Duration? = nil,
                           during: (@Sendable (LiveVM) async throws -> Void)? = nil) async throws -> RunOutcome {
        try await run { vm, runDir in
            try await SchedulerRun.run(vm: topology.map { t in var v = vm; v.topology = t; return v } ?? vm,
                                       scheduler: scheduler, workload: workload,
                                       duration: duration, artifactsDirectory: runDir, log: .default,
                                       live: LiveOptions(watchdogTimeout: watchdogTimeout ?? current?.watchdogTimeout,
                                                         during: during))
        }
    }

    /// Runs `scenario` (cgroups, workers, phases, checks: docs/SCENARIOS.md) under `scheduler`
    /// in a fresh VM. The scenario's `durationMillis`, when set, wins over `duration`. The
    /// outcome has `scenario` (per worker, cgroup and phase), `cgroups` (CPU shares) and
    /// `checks` (evaluated): assert with `expectChecksPass()` / `expectCheckFails(_:)`.
    public static func run(scheduler: SchedulerSpec, scenario: Scenario, duration: Duration = .seconds(3),
                           topology: Topology? = nil, watchdogTimeout: Duration? = nil,
                           during: (@Sendable (LiveVM) async throws -> Void)? = nil) async throws -> RunOutcome {
        try await run { vm, runDir in
            try await SchedulerRun.run(vm: topology.map { t in var v = vm; v.topology = t; return v } ?? vm,
                                       scheduler: scheduler, workload: .idle, duration: duration,
                                       artifactsDirectory: runDir, log: .default,
                                       live: LiveOptions(watchdogTimeout: watchdogTimeout ?? current?.watchdogTimeout, during: during),
                                       scenario: scenario)
        }
    }

    /// Runs `scenario` under `scheduler` and under `baseline` (default EEVDF, the kernel's
    /// own scheduler), one VM each with the same configuration, one after the other, and
    /// returns both outcomes with the ratios scheduler ÷ baseline (throughput, run delay,
    /// wake latency p99): `#expect(try #require(c.ratios.throughput) >= 0.9)`.
    public static func compare(scheduler: SchedulerSpec, baseline: SchedulerSpec = .eevdf, scenario: Scenario,
                               duration: Duration = .seconds(3), topology: Topology? = nil) async throws -> ScenarioComparison {
        let a = try await run(scheduler: scheduler, scenario: scenario, duration: duration, topology: topology)
        let b = try await run(scheduler: baseline, scenario: scenario, duration: duration, topology: topology)
        return ScenarioComparison(scheduler: a, baseline: b)
    }

    /// One run in the current test's context: its VM shape, `run<N>` artifacts, a skip on a
    /// kernel without sched_ext, the outcome recorded for attachments.
    static func run(_ body: (VMConfig, String) async throws -> RunOutcome) async throws -> RunOutcome {
        let context = current ?? KtstrContext(vm: VMConfig(), testName: "adhoc-\(getpid())")
        let runDir = context.artifactsDirectory + "/run\(context.runs.count + 1)"
        let outcome: RunOutcome
        do {
            outcome = try await body(context.vm, runDir)
        } catch let e as SchedulerRun.RunError {
            // A kernel without sched_ext cannot run a scheduler test: a skip with the reason.
            guard case .kernelWithoutSchedExt = e, Test.current != nil else { throw e }
            try Test.cancel(Comment(rawValue: e.description))
        }
        _ = context.record(outcome)
        return outcome
    }
}
