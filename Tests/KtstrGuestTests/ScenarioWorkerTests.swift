import Foundation
import Testing
import KtstrProtocol
@testable import KtstrGuest

@Suite struct ScenarioWorkerTests {
    @Test func histogramBucketsAndQuantiles() {
        // Buckets are monotonic and each value lies in its bucket's range.
        var last = -1
        for v: UInt64 in [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 100, 1000, 65_535, 1 << 40, UInt64.max] {
            let b = WakeHistogram.bucket(v)
            #expect(b >= last && b < WakeHistogram.buckets, "\(v)")
            let r = WakeHistogram.range(b)
            #expect(r.lo <= v && (v < r.hi || r.hi == .max), "\(v) in [\(r.lo), \(r.hi))")
            last = b
        }
        var counts = [UInt64](repeating: 0, count: WakeHistogram.buckets)
        // 98 samples of 10 µs, 2 of 5 ms: p50 ≈ 10 µs, p99 ≈ 5 ms (within a bucket's 12%).
        counts[WakeHistogram.bucket(10_000)] = 98
        counts[WakeHistogram.bucket(5_000_000)] = 2
        let p50 = WakeHistogram.quantile(0.5, counts: counts, max: 5_000_000) ?? 0
        let p99 = WakeHistogram.quantile(0.99, counts: counts, max: 5_000_000) ?? 0
        #expect(p50 > 8_800 && p50 < 11_300)
        #expect(p99 > 4_400_000 && p99 <= 5_000_000)
        #expect(WakeHistogram.quantile(0.5, counts: [UInt64](repeating: 0, count: 256), max: 0) == nil)
    }

    @Test func workerArgumentsRoundTrip() throws {
        let cfg = WorkerConfig(index: 7, work: .fanOut, role: "child", rendezvous: "/tmp/ktstr-sc1-0", cgroupDir: "/sys/fs/cgroup/a",
                               nice: -3, policy: .batch, periodMicros: 100, burstMicros: 20, workingSetKiB: 64, fanOut: 3, dir: "/d")
        #expect(WorkerConfig(arguments: cfg.arguments) == cfg)
        let bare = WorkerConfig(index: 0, work: .spin)
        #expect(WorkerConfig(arguments: bare.arguments) == bare)
        #expect(WorkerConfig(arguments: [WorkerConfig.flag, "index=1", "work=dance"]) == nil)
        #expect(WorkerConfig(arguments: [WorkerConfig.flag, "index=-1", "work=spin"]) == nil)
        #expect(WorkerConfig(arguments: [WorkerConfig.flag, "work=spin", "junk"]) == nil)
    }

    @Test func procFieldsParse() {
        let sched = """
            ktstr-spin0 (71, #threads: 1)
            -------------------------------------------------------------------
            se.exec_start                                :          5000.123456
            se.nr_migrations                             :                   12
            nr_switches                                  :                  300
            """
        #expect(ProcStats.field(sched, "se.nr_migrations") == 12)
        #expect(ProcStats.field(sched, "se.nr") == nil, "a prefix of a longer name is not that name")
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t7\n"
        #expect(ProcStats.field(status, "voluntary_ctxt_switches") == 150)
        #expect(ProcStats.field(status, "nonvoluntary_ctxt_switches") == 7)
        #expect(ProcStats.field("", "x") == nil)
    }

    @Test func counterSnapshotReadsWordsAndCPUs() {
        var words = [UInt64](repeating: 0, count: CounterLayout.words)
        words[CounterLayout.iterations] = 42
        words[CounterLayout.cpuMask] = 0b1010
        words[CounterLayout.cpuMask + 1] = 1
        words[CounterLayout.histogram + 3] = 9
        let bytes = words.flatMap { w in (0..<8).map { UInt8(truncatingIfNeeded: w >> (8 * UInt64($0))) } }
        let s = CounterSnapshot(bytes: bytes)
        #expect(s[CounterLayout.iterations] == 42)
        #expect(s.cpus == [1, 3, 64])
        #expect(s.histogram[3] == 9 && s.histogram.count == WakeHistogram.buckets)
        // A short file reads as zeros past its end.
        #expect(CounterSnapshot(bytes: Array(bytes.prefix(16))).cpus == [])
    }

    @Test func finalSampleGapCountsTheOpenOne() {
        var words = [UInt64](repeating: 0, count: CounterLayout.words)
        words[CounterLayout.lastStamp] = 1_000
        words[CounterLayout.maxGap] = 300
        var f = FinalSample(counters: CounterSnapshot(bytes: words.flatMap { w in (0..<8).map { UInt8(truncatingIfNeeded: w >> (8 * UInt64($0))) } }))
        f.at = 1_200
        #expect(f.maxGap(startedAt: 0) == 300)
        f.at = 5_000
        #expect(f.maxGap(startedAt: 0) == 4_000)
        // Never stamped (no counter file): the whole time since it was started.
        #expect(FinalSample(at: 9_000).maxGap(startedAt: 1_000) == 8_000)
    }

    @Test func oversizedReportsAreCutToOneLine() {
        let slices = [PhaseSlice](repeating: PhaseSlice(iterations: 123_456_789, cpuNanos: 987_654_321_000), count: 33)
        let w = WorkerMetrics(index: 0, group: String(repeating: "g", count: 64), cgroup: "a/b", work: "spin", pid: 100, iterations: 1,
                              cpuNanos: 1, runDelayNanos: 1, maxGapNanos: 1, migrations: 1, cpusUsed: Array(0..<64),
                              voluntarySwitches: 1, involuntarySwitches: 1, phases: slices)
        let big = ScenarioReport(phases: [], workers: (0..<400).map { var x = w; x.index = $0; return x }, cgroups: [])
        let cut = ScenarioMode.fitting(big)
        #expect(AgentMessage.scenario(cut).line().utf8.count <= AgentMessage.maxLineBytes)
        #expect(cut.workers.allSatisfy(\.phases.isEmpty) && !cut.workers.isEmpty)
        #expect(cut.problems.contains { $0.contains("phase slices were left out") })
        let small = ScenarioReport(phases: [], workers: [w], cgroups: [])
        #expect(ScenarioMode.fitting(small) == small)
    }

    /// Every work type, run for real on this host by the built agent binary (no cgroup, no
    /// VM): each process progresses, and the wake kinds record wake latencies.
    @Test func everyWorkTypeProgressesOnTheHost() throws {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("ktstr-guest").path
        try #require(FileManager.default.isExecutableFile(atPath: exe), "\(exe) missing: build with `swift build --build-tests`")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ktstr-work-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var configs: [WorkerConfig] = []
        for (g, work) in WorkType.allCases.enumerated() {
            let roles = switch work {
            case .futexPingPong, .pipePingPong: ["a", "b"]
            case .fanOut: ["parent", "child", "child"]
            default: [""]
            }
            for role in roles {
                configs.append(WorkerConfig(index: configs.count, work: work, role: role, rendezvous: "\(dir)/sc\(g)-0",
                                            periodMicros: work == .timerSleep || work == .ioWait ? 2000 : nil,
                                            workingSetKiB: work == .cachePressure ? 4096 : nil, fanOut: 2, dir: dir))
            }
        }
        let procs = try configs.map { cfg in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            p.arguments = cfg.arguments
            try p.run()
            return p
        }
        defer { for p in procs where p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        // Long enough on a loaded 2-CPU host for every kind to do some rounds.
        Thread.sleep(forTimeInterval: 1.5)
        let snaps = configs.map { CounterSnapshot(path: $0.counterPath) }
        for p in procs { kill(p.processIdentifier, SIGKILL) }
        for p in procs { p.waitUntilExit() }
        for (cfg, snap) in zip(configs, snaps) {
            let s = try #require(snap, "\(cfg.work.rawValue) \(cfg.role): no counter file")
            #expect(s[CounterLayout.iterations] > 0, "\(cfg.work.rawValue) \(cfg.role) made no progress")
            #expect(!s.cpus.isEmpty, "\(cfg.work.rawValue) \(cfg.role): no CPU recorded")
            #expect(SetupFailure(rawValue: s[CounterLayout.setupFailures]).subtracting([.nice, .policy]).isEmpty,
                    "\(cfg.work.rawValue) \(cfg.role): \(SetupFailure(rawValue: s[CounterLayout.setupFailures]).descriptions)")
            if cfg.work.measuresWakeLatency {
                #expect(s[CounterLayout.wakeSamples] > 0, "\(cfg.work.rawValue) \(cfg.role): no wake samples")
            }
            print("work \(cfg.work.rawValue) \(cfg.role): \(s[CounterLayout.iterations]) iterations, \(s[CounterLayout.wakeSamples]) wakes")
        }
    }
}
