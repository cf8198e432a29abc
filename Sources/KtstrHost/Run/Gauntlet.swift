import Foundation
import KtstrMachine
import KtstrProtocol

/// One scheduler over a matrix of topologies × kernels (`ktstr gauntlet`): every cell runs,
/// whatever the others did; each is judged by the same checks.
public enum Gauntlet {
    /// One cell of the matrix: where it ran and what the checks said.
    public struct Cell: Codable, Sendable, Equatable {
        public var topology: String
        public var kernel: String
        /// The scheduler's exit kind ("unreg", "error_bpf"…), "none" without one.
        public var exitKind: String
        public var checks: Checks
        public var wallMillis: Int
        /// Problems of the run, one line each, and the error when the run could not happen.
        public var problems: [String]
        /// What the guest reported (L3 groups, NUMA nodes), when it did.
        public var guestTopology: GuestTopology?
        /// With `--scenario`: the scenario's checks in this cell (each must pass too).
        public var scenarioChecks: [CheckResult]?
        public var passed: Bool { checks.all && problems.isEmpty && (scenarioChecks ?? []).allSatisfy(\.passed) }

        private enum CodingKeys: String, CodingKey {
            case topology, kernel, exitKind, checks, wallMillis, problems, guestTopology, scenarioChecks, passed
        }
        public init(topology: String, kernel: String, exitKind: String, checks: Checks, wallMillis: Int,
                    problems: [String], guestTopology: GuestTopology? = nil, scenarioChecks: [CheckResult]? = nil) {
            self.topology = topology; self.kernel = kernel; self.exitKind = exitKind; self.checks = checks
            self.wallMillis = wallMillis; self.problems = problems; self.guestTopology = guestTopology
            self.scenarioChecks = scenarioChecks
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(topology: try c.decode(String.self, forKey: .topology), kernel: try c.decode(String.self, forKey: .kernel),
                      exitKind: try c.decode(String.self, forKey: .exitKind), checks: try c.decode(Checks.self, forKey: .checks),
                      wallMillis: try c.decode(Int.self, forKey: .wallMillis), problems: try c.decode([String].self, forKey: .problems),
                      guestTopology: try c.decodeIfPresent(GuestTopology.self, forKey: .guestTopology),
                      scenarioChecks: try c.decodeIfPresent([CheckResult].self, forKey: .scenarioChecks))
        }
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(topology, forKey: .topology); try c.encode(kernel, forKey: .kernel)
            try c.encode(exitKind, forKey: .exitKind); try c.encode(checks, forKey: .checks)
            try c.encode(wallMillis, forKey: .wallMillis); try c.encode(problems, forKey: .problems)
            try c.encodeIfPresent(guestTopology, forKey: .guestTopology)
            try c.encodeIfPresent(scenarioChecks, forKey: .scenarioChecks); try c.encode(passed, forKey: .passed)
        }
    }

    /// The checks of a cell: the scheduler loaded, it did not exit with an error kind, every
    /// requested worker ran, and the run had no problems (a topology mismatch is one).
    public struct Checks: Codable, Sendable, Equatable {
        public var schedulerLoaded: Bool
        public var noErrorExit: Bool
        public var allWorkersRan: Bool
        public var noProblems: Bool
        public var all: Bool { schedulerLoaded && noErrorExit && allWorkersRan && noProblems }
        public var passedCount: Int { [schedulerLoaded, noErrorExit, allWorkersRan, noProblems].filter { $0 }.count }
        public static let none = Checks(schedulerLoaded: false, noErrorExit: false, allWorkersRan: false, noProblems: false)
    }

    /// Judges one run. `expectScheduler` false (scheduler none): "loaded" holds trivially.
    public static func checks(_ o: RunOutcome, expectScheduler: Bool) -> Checks {
        let loaded = !expectScheduler || (o.schedulerExit != nil && !o.problems.contains(.schedulerFailedToLoad))
        let requested = o.requestedWorkers ?? o.workers.count
        // A scenario run: its own per-worker report (progress points, not only CPU time).
        let ran = o.scenario.map { r in r.workers.count == requested && r.workers.allSatisfy { $0.iterations > 0 && $0.cpuNanos > 0 } }
            ?? (o.workers.count == requested && o.workers.allSatisfy { $0.cpuNanos > 0 && $0.runs > 0 })
        return Checks(schedulerLoaded: loaded, noErrorExit: o.schedulerExit?.isError != true,
                      allWorkersRan: ran, noProblems: o.problems.isEmpty)
    }

    public static func cell(topology: Topology, kernel: String, outcome o: RunOutcome, expectScheduler: Bool) -> Cell {
        Cell(topology: topology.presetName ?? topology.description, kernel: kernel,
             exitKind: o.schedulerExit?.kind.name ?? "none", checks: checks(o, expectScheduler: expectScheduler),
             wallMillis: o.wallMillis, problems: o.problems.map(\.description), guestTopology: o.guestTopology,
             scenarioChecks: o.checks)
    }

    /// A cell whose run could not happen (no kernel, VM would not start…).
    public static func failedCell(topology: Topology, kernel: String, error: any Error, wallMillis: Int) -> Cell {
        Cell(topology: topology.presetName ?? topology.description, kernel: kernel, exitKind: "-", checks: .none,
             wallMillis: wallMillis, problems: ["run failed: \(error)"])
    }

    /// The rows as an aligned table, with the first problem of a failed cell under it.
    public static func table(_ cells: [Cell]) -> String {
        let header = ["TOPOLOGY", "KERNEL", "EXIT", "CHECKS", "WALL", "RESULT"]
        let rows = cells.map { c in
            [c.topology, c.kernel, c.exitKind, "\(c.checks.passedCount)/4" + (c.checks.all ? "" : " (\(failedChecks(c.checks)))")
                + (c.scenarioChecks.map { sc in " + \(sc.filter(\.passed).count)/\(sc.count) scenario" } ?? ""),
             String(format: "%.1f s", Double(c.wallMillis) / 1000), c.passed ? "ok" : "FAIL"]
        }
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max() ?? 0 }
        func line(_ r: [String]) -> String {
            zip(r, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }
        var out = [line(header)]
        for (c, r) in zip(cells, rows) {
            out.append(line(r))
            if let p = c.problems.first { out.append("    ↳ \(p)") }
            for f in (c.scenarioChecks ?? []).filter({ !$0.passed }) { out.append("    ↳ check \(f)") }
        }
        let passed = cells.filter(\.passed).count
        out.append("\(passed) of \(cells.count) cells passed")
        return out.joined(separator: "\n")
    }

    static func failedChecks(_ c: Checks) -> String {
        [("loaded", c.schedulerLoaded), ("no-error", c.noErrorExit), ("workers", c.allWorkersRan), ("no-problems", c.noProblems)]
            .filter { !$0.1 }.map(\.0).joined(separator: ",")
    }
}
