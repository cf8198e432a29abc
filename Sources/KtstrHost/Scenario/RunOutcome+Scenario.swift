import Foundation
import KtstrProtocol

extension RunOutcome {
    /// After a scenario run: the processes it asked for, the cgroup shares and the checks.
    /// Without a report every check fails with the reason (never a silent pass) and the run
    /// gets a `scenario_not_reported` problem.
    mutating func applyScenario(_ scenario: Scenario) {
        requestedWorkers = scenario.requestedProcesses
        guard let report = self.scenario else {
            problems.append(RunProblem(.scenarioNotReported, "scenario '\(scenario.name)'"))
            checks = scenario.checks.map {
                CheckResult(name: $0.check, passed: false, measured: 0, limit: $0.limit ?? 0, cgroup: $0.cgroup,
                            detail: "no scenario report from the agent")
            }
            return
        }
        cgroups = CgroupShares.shares(report.cgroups)
        checks = ScenarioChecks.evaluate(scenario.checks, report: report, scenario: scenario)
    }

    /// A check's result by kind (the first one of that kind; `cgroup` picks among several).
    public func check(_ kind: ScenarioCheck.Kind, cgroup: String? = nil) -> CheckResult? {
        checks?.first { $0.name == kind.rawValue && (cgroup == nil || $0.cgroup == cgroup) }
    }

    /// The failed checks (empty when there are none or no checks).
    public var failedChecks: [CheckResult] { (checks ?? []).filter { !$0.passed } }
}

extension Scenario {
    /// Worker processes the scenario starts (a ping-pong pair is 2, a fan_out parent 1 +
    /// its children), bounded as the agent bounds them.
    public var requestedProcesses: Int {
        min(groups.reduce(0) { $0 + max(0, $1.workers.count) * $1.workers.processesPerUnit }, Scenario.maxProcesses)
    }

    /// Reads a scenario file (JSON, docs/SCENARIOS.md): the decoder's clear error, with the path.
    public static func load(path: String) throws -> Scenario {
        let limit = 1 << 20
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw SchedulerRun.RunError.setup("scenario \(path): cannot read the file — pass the path of a scenario JSON file (Examples/scenarios/)")
        }
        defer { try? handle.close() }
        let data = (try? handle.read(upToCount: limit + 1)) ?? Data()
        guard data.count <= limit else { throw SchedulerRun.RunError.setup("scenario \(path): larger than 1 MiB — not a scenario file") }
        switch Scenario.decode([UInt8](data)) {
        case let .success(s): return s
        case let .failure(e): throw SchedulerRun.RunError.setup("\(path): \(e.text)")
        }
    }
}
