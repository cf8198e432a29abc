import Testing
import KtstrProtocol
@testable import KtstrGuest

/// The agent's scenario readers (a worker's command line, /proc fields, counter files) take
/// any input without trapping, and what they accept is in range.
@Suite struct ScenarioWorkerFuzzTests {
    @Test func workerArgumentsMutants() {
        let cfg = WorkerConfig(index: 12, work: .fanOut, role: "child", rendezvous: "/tmp/ktstr-sc3-1", cgroupDir: "/sys/fs/cgroup/a/b",
                               nice: -5, policy: .idle, periodMicros: 2000, burstMicros: 100, workingSetKiB: 8192, fanOut: 4)
        let seed = Array(cfg.arguments.joined(separator: "\u{0}").utf8)
        let problems = Fuzz.run("worker arguments", seed: seed, baseSeed: 0x3A6_0000) { b in
            let args = String(decoding: b, as: UTF8.self).split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
            guard let c = WorkerConfig(arguments: args) else { return nil }
            if c.index < 0 { return "negative index \(c.index)" }
            return WorkerConfig(arguments: c.arguments) == c ? nil : "\(args) does not round-trip"
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    @Test func procFieldAndCounterMutants() {
        let text = Array("se.exec_start : 5.1\nse.nr_migrations                :                  12\nvoluntary_ctxt_switches:\t150\n".utf8)
        var problems = Fuzz.run("proc fields", seed: text, baseSeed: 0x9C0_0000) { b in
            let t = String(decoding: b, as: UTF8.self)
            _ = ProcStats.field(t, "se.nr_migrations")
            _ = ProcStats.field(t, "voluntary_ctxt_switches")
            return nil
        }
        var words = [UInt64](repeating: 0, count: CounterLayout.words)
        words[CounterLayout.cpuMask] = 3
        words[CounterLayout.histogram + 40] = 7
        let bytes = words.flatMap { w in (0..<8).map { UInt8(truncatingIfNeeded: w >> (8 * UInt64($0))) } }
        problems += Fuzz.run("counter file", seed: bytes, baseSeed: 0xC0_0000) { b in
            let s = CounterSnapshot(bytes: b)
            if s.cpus.contains(where: { $0 < 0 || $0 >= Scenario.maxCPUs }) { return "CPU out of range" }
            if let q = WakeHistogram.quantile(0.99, counts: s.histogram, max: s[CounterLayout.wakeMax]), q > s[CounterLayout.wakeMax] {
                return "p99 \(q) above the max"
            }
            return nil
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }
}
