import Foundation
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol

/// What `ktstr bench boot` reports: per variant the wall-time summary (and ktstr's own
/// `bootMillis` where there is one), and each ktstr variant's median over the baseline's.
public struct BenchBootReport: Codable, Sendable {
    public struct Variant: Codable, Sendable {
        public var name: String
        public var what: String
        /// Wall time of each sample, ms, in the order they ran.
        public var wallSamples: [Double]
        public var wall: BenchSummary?
        /// RunOutcome.bootMillis (machine start → agent hello); nil for the baseline.
        public var boot: BenchSummary?

        public init(name: String, what: String, wallSamples: [Double], bootSamples: [Double]?) {
            self.name = name; self.what = what; self.wallSamples = wallSamples
            wall = BenchSummary(wallSamples)
            boot = bootSamples.flatMap { BenchSummary($0) }
        }
    }

    public var iterations: Int
    public var cpus: Int
    public var memoryMiB: Int
    public var kernel: String
    public var kernelCmdline: String
    /// /proc/loadavg before and after the run.
    public var loadBefore: String
    public var loadAfter: String
    public var variants: [Variant]
    /// "<variant>/<baseline>" → median(variant) / median(baseline).
    public var ratios: [String: Double]

    public init(iterations: Int, cpus: Int, memoryMiB: Int, kernel: String, kernelCmdline: String,
                loadBefore: String, loadAfter: String, baseline: Variant, others: [Variant]) {
        self.iterations = iterations; self.cpus = cpus; self.memoryMiB = memoryMiB; self.kernel = kernel
        self.kernelCmdline = kernelCmdline; self.loadBefore = loadBefore; self.loadAfter = loadAfter
        variants = [baseline] + others
        var r: [String: Double] = [:]
        if let b = baseline.wall {
            for v in others { if let w = v.wall, let x = w.ratio(over: b) { r["\(v.name)/\(baseline.name)"] = x } }
        }
        ratios = r
    }

    /// The text form: one line per variant, then the ratios.
    public var text: String {
        func ms(_ v: Double) -> String { String(format: "%8.0f", v) }
        var lines = ["boot benchmark: \(iterations) iterations interleaved, \(cpus) vCPUs, \(memoryMiB) MiB, qemu TCG, kernel \(kernel)",
                     "load average before: \(loadBefore)   after: \(loadAfter)",
                     "wall ms                              min   median      p90      max   boot median (start → hello)"]
        for v in variants {
            guard let w = v.wall else { continue }
            let boot = v.boot.map { String(format: "%8.0f", $0.median) } ?? "       -"
            lines.append("  \(v.name.padding(toLength: 28, withPad: " ", startingAt: 0))\(ms(w.min)) \(ms(w.median)) \(ms(w.p90)) \(ms(w.max))   \(boot)")
        }
        for v in variants { lines.append("  \(v.name): \(v.what)") }
        lines.append("  wall: A spawn → qemu exit; the others the whole SchedulerRun.run call (initramfs, boot or restore, run, power-off, dump)")
        for (k, x) in ratios.sorted(by: { $0.key < $1.key }) {
            lines.append(String(format: "ratio of medians %@: %.2fx", k, x))
        }
        return lines.joined(separator: "\n")
    }

    /// /proc/loadavg's first three fields ("" where unreadable).
    public static func loadAverage() -> String {
        let t = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
        return t.split(separator: " ").prefix(3).joined(separator: " ")
    }
}
