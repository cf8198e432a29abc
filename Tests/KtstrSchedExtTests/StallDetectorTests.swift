import Foundation
import Testing
@testable import KtstrSchedExt

/// The host-side stall detector on synthetic samples (no VM), and the timeline's bound.
@Suite struct StallDetectorTests {
    /// One sample 100 ms apart; CPU clocks in ns.
    static func sample(_ ms: Int, _ cpus: [CPUSample]) -> TimelineSample { TimelineSample(millis: ms, cpus: cpus) }
    static func cpu(nr: UInt32, clock: UInt64, curr: Int32 = 0, wait: RunnableWait? = nil) -> CPUSample {
        CPUSample(nrRunning: nr, scxNrRunning: nr, localDSQDepth: 0, currentPID: curr, currentComm: curr == 0 ? "swapper" : "w\(curr)",
                  rqClock: clock, oldestRunnable: wait)
    }

    @Test func aTaskWaitingPastTheThresholdIsReportedOnce() {
        var d = StallDetector(thresholdMillis: 2000)
        var reports: [HostStall] = []
        for i in 0...30 {
            let ms = i * 100
            let victim = RunnableWait(pid: 61, comm: "ktstr-spinn1", waitMillis: ms)
            reports += d.observe(Self.sample(ms, [Self.cpu(nr: 2, clock: UInt64(ms) * 1_000_000, curr: 60, wait: victim),
                                                  Self.cpu(nr: 0, clock: 0)]), active: true)
        }
        #expect(reports.count == 1, "\(reports)")
        let r = reports[0]
        #expect(r.cause == .taskWaiting && r.cpu == 0 && r.pid == 61 && r.comm == "ktstr-spinn1")
        #expect(r.stalledMillis == 2000 && r.detectedAtMillis == 2000)
        #expect(r.summary == "cpu 0: ktstr-spinn1[61] runnable for 2.0 s without running")
        #expect(r.excerpt.count == 5 && r.excerpt.last?.hasPrefix("+2000ms nr 2 scx 2 local 0 curr w60[60] clock +100ms") == true,
                "\(r.excerpt)")
    }

    @Test func aStoppedClockWithRunnableTasksIsReportedOncePerCPU() {
        var d = StallDetector(thresholdMillis: 2000)
        var reports: [HostStall] = []
        for i in 0...40 {
            let ms = i * 100
            // CPU 1's clock stops at 500 ms with a task runnable; CPU 0 keeps ticking.
            reports += d.observe(Self.sample(ms, [Self.cpu(nr: 1, clock: UInt64(ms) * 1_000_000, curr: 60),
                                                  Self.cpu(nr: 1, clock: UInt64(min(ms, 500)) * 1_000_000, curr: 62)]), active: true)
        }
        #expect(reports.count == 1, "\(reports)")
        #expect(reports.first?.cause == .clockStopped && reports.first?.cpu == 1 && reports.first?.pid == 62)
        #expect(reports.first?.detectedAtMillis == 2500 && reports.first?.stalledMillis == 2000)
        #expect(reports.first?.excerpt.last?.contains("clock stopped") == true, "\(reports.first?.excerpt ?? [])")
    }

    /// A frozen or descheduled guest stops every clock alike, an idle CPU's clock may lag,
    /// and nothing is judged while no scheduler runs: none of these is a stall.
    @Test func frozenGuestsIdleCPUsAndInactiveSamplesAreNotStalls() {
        var d = StallDetector(thresholdMillis: 2000)
        var reports: [HostStall] = []
        for i in 0...40 {
            let ms = i * 100
            let frozenClock = UInt64(min(ms, 300)) * 1_000_000 // the whole guest stops at 300 ms
            reports += d.observe(Self.sample(ms, [Self.cpu(nr: 1, clock: frozenClock, curr: 60),
                                                  Self.cpu(nr: 1, clock: frozenClock, curr: 61)]), active: true)
        }
        var idle = StallDetector(thresholdMillis: 2000)
        for i in 0...40 {
            let ms = i * 100
            reports += idle.observe(Self.sample(ms, [Self.cpu(nr: 1, clock: UInt64(ms) * 1_000_000, curr: 60),
                                                     Self.cpu(nr: 0, clock: 0)]), active: true)
        }
        var inactive = StallDetector(thresholdMillis: 2000)
        for i in 0...40 {
            let ms = i * 100
            reports += inactive.observe(Self.sample(ms, [Self.cpu(nr: 1, clock: UInt64(ms) * 1_000_000, curr: 60,
                                                                  wait: RunnableWait(pid: 61, comm: "w61", waitMillis: ms)),
                                                         Self.cpu(nr: 1, clock: 0)]), active: false)
        }
        #expect(reports.isEmpty, "\(reports)")
    }

    @Test func boundedTimelinesKeepTheEndsAndCountWhatTheyDrop() {
        let samples = (0..<1001).map { Self.sample($0 * 10, [Self.cpu(nr: 0, clock: UInt64($0))]) }
        let t = Timeline(intervalMillis: 10, samples: samples, markers: [TimelineMarker(millis: 5, kind: .schedulerEnabled, label: "x")],
                         samplingMillis: 12.5)
        let b = t.bounded(to: 600)
        #expect(b.samples.count == 600 && b.droppedSamples == 401)
        #expect(b.samples.first?.millis == 0 && b.samples.last?.millis == 10_000)
        #expect(zip(b.samples, b.samples.dropFirst()).allSatisfy { $0.millis < $1.millis })
        #expect(b.markers == t.markers && b.samplingMillis == 12.5)
        #expect(t.bounded(to: 2000) == t)
    }

    @Test func hzComesFromTheKernelConfigOrIsEstimated() throws {
        let path = "/tmp/ktstr-hz-test-\(UInt64.random(in: 0...UInt64.max))"
        try "CONFIG_HZ_250=y\nCONFIG_HZ=250\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(TimelineSampler.hz(kernelConfig: path) == 250)
        #expect(TimelineSampler.hz(kernelConfig: "/nonexistent") == nil)
        #expect(TimelineSampler.roundHZ(243.7) == 250 && TimelineSampler.roundHZ(980) == 1000 && TimelineSampler.roundHZ(.nan) == nil)
        #expect(TimelineSampler.wait(100, 120) == 0 && TimelineSampler.wait(500, 250) == 250)
        // Torn runnable-list entries: pid 0, or runnable_at before the first jiffy (HZ 250:
        // INITIAL_JIFFIES = 2^32 - 75000), are not waits.
        let first: UInt64 = (1 << 32) - 75_000
        #expect(TimelineSampler.plausible(RunnableTask(pid: 7, comm: "w", runnableAt: first + 10), hz: 250))
        #expect(!TimelineSampler.plausible(RunnableTask(pid: 0, comm: "", runnableAt: first + 10), hz: 250))
        #expect(!TimelineSampler.plausible(RunnableTask(pid: 7, comm: "w", runnableAt: 0), hz: 250))
        #expect(!TimelineSampler.plausible(RunnableTask(pid: 7, comm: "w", runnableAt: first - 1), hz: 250))
    }
}
