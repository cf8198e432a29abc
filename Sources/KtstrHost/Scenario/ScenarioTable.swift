import Foundation
import KtstrProtocol

/// A scenario run as text tables for people: cgroup shares, worker groups, checks, phases
/// (`ktstr run --scenario`, and scenario.txt among a run's artifacts).
public enum ScenarioTable {
    public static func render(_ o: RunOutcome) -> String {
        guard let r = o.scenario else {
            return "scenario      no report from the agent\n" + checks(o.checks ?? [])
        }
        var s = ""
        if let shares = o.cgroups, !shares.isEmpty {
            s += table(["CGROUP", "WEIGHT", "CPUS", "CPU SHARE"], shares.map { c in
                [c.path, c.weight.map(String.init) ?? "-", r.cgroups.first { $0.path == c.path }?.cpus ?? "-", pct(c.cpuShare)]
            })
        }
        s += table(["GROUP", "CGROUP", "WORK", "N", "ITERATIONS", "CPU ms", "RUN DELAY ms", "MAX GAP ms", "WAKE P99 ms", "MIGR", "CPUS"],
                   r.groupSummaries.map { g in
            [g.group, g.cgroup.isEmpty ? "/" : g.cgroup, g.work, String(g.workers), String(g.iterations), num(g.cpuMillis),
             num(g.meanRunDelayMillis), num(g.maxGapMillis), g.wakeP99Millis.map(num) ?? "-", String(g.maxMigrations),
             GuestTopology.list(g.cpusUsed)]
        })
        s += checks(o.checks ?? [])
        let phases = r.phaseSummaries
        if phases.count > 1 {
            var rows: [[String]] = []
            for p in phases {
                for g in p.groups {
                    rows.append([p.name, "\(p.startMillis)-\(p.endMillis)", g.group, String(g.iterations), num(g.cpuMillis)])
                }
                for c in p.cgroups { rows.append([p.name, "\(p.startMillis)-\(p.endMillis)", "cgroup " + c.path, "-", pct(c.cpuShare) + " share"]) }
            }
            s += table(["PHASE", "ms", "GROUP", "ITERATIONS", "CPU ms"], rows)
        }
        for p in r.problems { s += "problem       \(p)\n" }
        return s
    }

    static func checks(_ checks: [CheckResult]) -> String {
        guard !checks.isEmpty else { return "" }
        let rows = checks.map { c in
            [c.name + (c.cgroup.map { " (\($0))" } ?? ""), c.passed ? "pass" : "FAIL", CheckResult.format(c.measured),
             CheckResult.format(c.limit), c.detail]
        }
        return table(["CHECK", "RESULT", "MEASURED", "LIMIT", "DETAIL"], rows)
            + "\(checks.filter(\.passed).count) of \(checks.count) checks passed\n"
    }

    /// The comparison's ratios, one line each.
    public static func ratios(_ r: ScenarioComparison.Ratios) -> String {
        func line(_ name: String, _ v: Double?, _ meaning: String) -> String {
            "\(name)\(v.map { num($0, decimals: 3) } ?? "-")   \(meaning)\n"
        }
        return line("throughput    ", r.throughput, "iterations, scheduler ÷ baseline")
            + line("run delay     ", r.runDelay, "mean run delay, scheduler ÷ baseline")
            + line("wake p99      ", r.wakeLatencyP99, "mean p99 wake latency, scheduler ÷ baseline")
    }

    /// Columns padded to their widest cell; a blank line after.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { i < $0.count ? $0[i].count : 0 }.max() ?? 0 }
        var s = ""
        for row in all {
            let cells = row.enumerated().map { i, c in i == row.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            s += cells.joined(separator: "  ") + "\n"
        }
        return s + "\n"
    }

    static func num(_ v: Double) -> String { num(v, decimals: 1) }
    static func num(_ v: Double, decimals: Int) -> String {
        guard v.isFinite else { return "\(v)" }
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let r = (v * scale).rounded() / scale
        return decimals == 0 ? String(Int64(r)) : "\(r)"
    }
    static func pct(_ v: Double) -> String { num(v) + "%" }
}
