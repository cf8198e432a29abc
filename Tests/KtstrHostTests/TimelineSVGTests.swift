import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrHost

/// `TimelineSVG`: the picture of a sampled timeline (issue 13).
@Suite struct TimelineSVGTests {
    static let hostile = "<script>&\"'"

    /// 2 CPUs (or `cpus`), `count` samples 100 ms apart: workers 101 and 102 alternate on CPU 0,
    /// CPU 1 runs worker 102, a hostile comm (pid 666) and idle; four markers, an error exit last.
    static func timeline(samples count: Int = 50, cpus: Int = 2) -> (Timeline, [WorkerStats]) {
        var samples: [TimelineSample] = []
        for i in 0..<count {
            var cs: [CPUSample] = []
            for c in 0..<cpus {
                let (pid, comm): (Int32, String) = switch (c, (i / 5) % 4) {
                case (0, 0), (0, 1): (101, "ktstr-worker")
                case (0, _): (102, "ktstr-worker")
                case (_, 0): (0, "swapper/\(c)")
                case (_, 1): (666, hostile)
                default: (Int32(102 + c), "ktstr-worker")
                }
                cs.append(CPUSample(nrRunning: UInt32((i + c) % 4), scxNrRunning: UInt32((i + c) % 3), localDSQDepth: UInt32(i % 3),
                                    currentPID: pid, currentComm: comm, rqClock: UInt64(i) * 100_000_000))
            }
            samples.append(TimelineSample(millis: i * 100, cpus: cs))
        }
        let end = count * 100
        let markers = [
            TimelineMarker(millis: 150, kind: .schedulerEnabled, label: "scx_simple enabled"),
            TimelineMarker(millis: end / 3, kind: .phase, label: "phase 2"),
            TimelineMarker(millis: end / 2, kind: .hostStall, label: "stall cpu 1: \(hostile)[666]", cpu: 1),
            TimelineMarker(millis: end / 2 + 300, kind: .bpfWrite, label: "bpf write stall_pid"),
            TimelineMarker(millis: end - 200, kind: .schedulerExit, label: "error_stall"),
        ]
        let workers = [WorkerStats(index: 0, pid: 101, cpuNanos: 0, waitNanos: 0, runs: 0, iterations: 0),
                       WorkerStats(index: 1, pid: 102, cpuNanos: 0, waitNanos: 0, runs: 0, iterations: 0),
                       WorkerStats(index: 2, pid: 103, cpuNanos: 0, waitNanos: 0, runs: 0, iterations: 0)]
        return (Timeline(intervalMillis: 100, samples: samples, markers: markers, samplingMillis: 12.5), workers)
    }

    /// Element names and attributes, from a real XML parser: nil when the text is not well-formed.
    final class Collector: NSObject, XMLParserDelegate {
        var elements: [(name: String, attributes: [String: String])] = []
        var text = ""
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                    attributes: [String: String] = [:]) {
            elements.append((name, attributes))
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) { text += "\n" }
    }

    static func parse(_ svg: String) -> Collector? {
        let p = XMLParser(data: Data(svg.utf8))
        let c = Collector()
        p.delegate = c
        return p.parse() ? c : nil
    }

    @Test func wellFormedWithALanePerCPU() throws {
        let (t, workers) = Self.timeline()
        let svg = TimelineSVG.render(t, workers: workers, title: "scx_simple & friends <run 1>")
        let doc = try #require(Self.parse(svg), "not well-formed XML:\n\(svg.prefix(2000))")
        #expect(doc.elements.first?.name == "svg")
        #expect(doc.elements.first?.attributes["width"] == "1000")
        // The lane labels and nothing for a third CPU.
        #expect(doc.text.contains("cpu 0") && doc.text.contains("cpu 1") && !doc.text.contains("cpu 2\n"))
        let laneBackgrounds = doc.elements.filter { $0.name == "rect" && $0.attributes["fill"] == "#fafafa" }
        #expect(laneBackgrounds.count == 2)
        // Workers by index, idle in light grey, the hostile comm's pid neutral.
        let fills = Set(doc.elements.filter { $0.name == "rect" }.compactMap { $0.attributes["fill"] })
        #expect(fills.isSuperset(of: [TimelineSVG.workerColour(0), TimelineSVG.workerColour(1), TimelineSVG.workerColour(2),
                                      TimelineSVG.idle, TimelineSVG.otherTask]))
        // The title survived, escaped and parsed back.
        #expect(doc.text.contains("scx_simple & friends <run 1>"))
        // The legend names the workers.
        #expect(doc.text.contains("worker 0 (pid 101)") && doc.text.contains("worker 2 (pid 103)"))
    }

    @Test func guestTextIsEscaped() throws {
        let (t, workers) = Self.timeline()
        let svg = TimelineSVG.render(t, workers: workers, title: "t")
        #expect(!svg.contains("<script"))
        #expect(!svg.contains(Self.hostile))
        #expect(svg.contains("&lt;script&gt;&amp;&quot;&apos;"))
        #expect(Self.parse(svg) != nil)
        // Control characters (not allowed in XML 1.0 even escaped), long names truncated.
        #expect(TimelineSVG.escape("a\u{1}b\u{7f}c\n") == "a?b?c?")
        #expect(TimelineSVG.escape(String(repeating: "x", count: 100), limit: 16) == String(repeating: "x", count: 15) + "…")
        var evil = t
        evil.samples[0].cpus[0].currentComm = "\u{0}\u{1b}]0;pwn\u{7}" + String(repeating: "<&>", count: 50)
        evil.markers.append(TimelineMarker(millis: 10, kind: .phase, label: "\u{8}</svg><svg onload='x'>"))
        let svg2 = TimelineSVG.render(evil, workers: [], title: "\u{0}")
        #expect(Self.parse(svg2) != nil, "\(svg2.prefix(3000))")
        #expect(!svg2.contains("onload='") && !svg2.contains("</svg><svg"))
    }

    @Test func markersAreDrawnWithLabels() throws {
        let (t, workers) = Self.timeline()
        let svg = TimelineSVG.render(t, workers: workers, title: "t")
        let doc = try #require(Self.parse(svg))
        for label in ["scx_simple enabled", "phase 2", "stall cpu 1: \(Self.hostile)[666]", "bpf write stall_pid", "error_stall"] {
            #expect(doc.text.contains(label), "label \(label) missing")
        }
        // The error exit and the host stall are red; the legend says so.
        let redLines = doc.elements.filter { $0.name == "line" && $0.attributes["stroke"] == TimelineSVG.red }
        #expect(redLines.count >= 2 + 2) // two markers, two legend swatches
        #expect(doc.text.contains("scheduler exit (error)") && doc.text.contains("host stall"))
        // A clean exit is not red.
        #expect(!TimelineSVG.isErrorExit("unreg_bpf: bye") && TimelineSVG.isErrorExit("error_stall: runnable task stall")
                && TimelineSVG.isErrorExit("error_something_new") && !TimelineSVG.isErrorExit("done"))
        // The axis is in seconds: 0 … 5.
        #expect(doc.text.contains("time (s)"))
        let texts = doc.elements.filter { $0.name == "text" }.count
        #expect(texts > 10)
    }

    @Test func consecutiveSamplesMerge() {
        let (t, _) = Self.timeline()
        // CPU 0: 101 for 10 samples, 102 for 10, repeated: 5 segments for 50 samples.
        let segs = TimelineSVG.segments(t, cpu: 0, spacing: 100)
        #expect(segs.map(\.pid) == [101, 102, 101, 102, 101])
        #expect(segs.first?.start == 0 && segs.first?.end == 1000 && segs.last?.end == 5000)
        // A gap in sampling stays a gap.
        var gappy = t
        gappy.samples.removeSubrange(20..<30)
        let g = TimelineSVG.segments(gappy, cpu: 0, spacing: 100)
        #expect(g.contains { $0.end == 1900 + 250 } && g.contains { $0.start == 3000 })
    }

    @Test func sizeIsBoundedForLongRuns() throws {
        // Worst case: the running task changes every sample.
        for cpus in [2, 8] {
            var (t, workers) = Self.timeline(samples: 10_000, cpus: cpus)
            for i in t.samples.indices { for c in 0..<cpus { t.samples[i].cpus[c].currentPID = Int32(200 + (i + c) % 7) } }
            let clock = ContinuousClock()
            var svg = ""
            let took = clock.measure { svg = TimelineSVG.render(t, workers: workers, title: "long") }
            #expect(svg.utf8.count < 2_000_000, "\(cpus) CPUs: \(svg.utf8.count) bytes")
            #expect(took < .seconds(5), "\(cpus) CPUs: \(took)")
            #expect(Self.parse(svg) != nil)
        }
    }

    @Test func emptyAndDegenerateTimelines() throws {
        let empty = TimelineSVG.render(Timeline(intervalMillis: 100), title: "nothing")
        let doc = try #require(Self.parse(empty))
        #expect(doc.text.contains("no samples"))
        // One sample, a marker long after it, unread pids and fewer CPUs in some samples.
        let t = Timeline(intervalMillis: 100, samples: [
            TimelineSample(millis: 0, cpus: [CPUSample(nrRunning: 1, scxNrRunning: 1, localDSQDepth: 0, currentPID: nil, currentComm: nil, rqClock: 0)]),
            TimelineSample(millis: 100, cpus: []),
        ], markers: [TimelineMarker(millis: 60_000, kind: .schedulerExit, label: "", cpu: 99)])
        #expect(Self.parse(TimelineSVG.render(t, title: "")) != nil)
    }

    @Test func artifactsIncludeTheSVGWhenThereIsATimeline() {
        var o = RunOutcome(backend: .qemuTCG, kernelRelease: "7.3.4", wallMillis: 1)
        #expect(!RunArtifacts.files(of: o).contains { $0.name == "timeline.svg" })
        o.timeline = Self.timeline().0
        let svg = RunArtifacts.files(of: o).first { $0.name == "timeline.svg" }
        #expect(svg?.contents.hasPrefix("<?xml") == true)
        #expect(svg?.contents.contains("7.3.4") == true)
    }

    /// A plausible stall run for docs/: 2 CPUs, 3 spinners, worker 2 starved from 3 s, the
    /// host sees the stall, the scheduler exits with error_stall at 6 s and CFS takes over.
    static func stallExample() -> (Timeline, [WorkerStats]) {
        var seed: UInt64 = 42
        func rnd(_ n: Int) -> Int { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return Int((seed >> 33) % UInt64(n)) }
        let workers = (0..<3).map { WorkerStats(index: $0, pid: 101 + $0, cpuNanos: 0, waitNanos: 0, runs: 0, iterations: 0) }
        var samples: [TimelineSample] = []
        var cur: [Int32] = [1, 0]
        for i in 0..<80 {
            let ms = i * 100
            var cs: [CPUSample] = []
            for c in 0..<2 {
                var nr: UInt32 = 0, dsq: UInt32 = 0
                switch ms {
                case ..<500: cur[c] = c == 0 && i % 3 == 0 ? 1 : 0; nr = cur[c] == 0 ? 0 : 1
                case ..<3000: // scx_simple shares both CPUs between the three workers
                    if rnd(3) == 0 || cur[c] < 101 { cur[c] = Int32(101 + (c == 0 ? rnd(2) : 1 + rnd(2))) }
                    nr = c == 0 ? 2 : 2; dsq = UInt32(rnd(2))
                case ..<6000: // worker 2 waits on CPU 1 and never runs
                    cur[c] = c == 0 ? 101 : 102
                    nr = c == 0 ? 1 : 2; dsq = c == 0 ? 0 : 1
                default: // after the exit: CFS
                    if rnd(2) == 0 || cur[c] < 101 { cur[c] = Int32(101 + rnd(3)) }
                    nr = UInt32(1 + rnd(2))
                }
                if rnd(25) == 0 && ms >= 500 { cur[c] = 42 } // the agent, now and then
                let comm = cur[c] == 0 ? "swapper/\(c)" : cur[c] == 1 ? "init" : cur[c] == 42 ? "kworker/\(c):1" : "ktstr-worker"
                cs.append(CPUSample(nrRunning: nr, scxNrRunning: ms >= 500 && ms < 6000 ? nr : 0, localDSQDepth: dsq,
                                    currentPID: cur[c], currentComm: comm, rqClock: UInt64(ms) * 1_000_000))
            }
            samples.append(TimelineSample(millis: ms, cpus: cs))
        }
        let markers = [
            TimelineMarker(millis: 480, kind: .schedulerEnabled, label: "scx_simple enabled"),
            TimelineMarker(millis: 3000, kind: .phase, label: "phase 2: stall"),
            TimelineMarker(millis: 3020, kind: .bpfWrite, label: "stall_pid = 103"),
            TimelineMarker(millis: 5500, kind: .hostStall, label: "cpu 1: ktstr-worker[103] waited 2.5 s", cpu: 1),
            TimelineMarker(millis: 6010, kind: .schedulerExit, label: "error_stall"),
        ]
        return (Timeline(intervalMillis: 100, samples: samples, markers: markers, samplingMillis: 9.3), workers)
    }

    /// Writes the example pictures when KTSTR_TIMELINE_EXAMPLE names a directory (docs/).
    static let exampleDir = ProcessInfo.processInfo.environment["KTSTR_TIMELINE_EXAMPLE"]

    @Test(.enabled(if: exampleDir != nil, "writes the docs pictures only when KTSTR_TIMELINE_EXAMPLE=DIR is set"))
    func writeExample() throws {
        let dir = try #require(Self.exampleDir)
        let (t, workers) = Self.stallExample()
        let svg = TimelineSVG.render(t, workers: workers, title: "sched_ext timeline · scx_simple, a starved worker (synthetic) · exit error_stall")
        #expect(Self.parse(svg) != nil)
        try Data(svg.utf8).write(to: URL(fileURLWithPath: dir + "/timeline-example.svg"))
        let (big, w2) = Self.timeline(samples: 3000, cpus: 8)
        try Data(TimelineSVG.render(big, workers: w2, title: "dense").utf8).write(to: URL(fileURLWithPath: dir + "/timeline-dense.svg"))
        let (four, w4) = Self.timeline(samples: 60, cpus: 4)
        try Data(TimelineSVG.render(four, workers: w4, title: "four").utf8).write(to: URL(fileURLWithPath: dir + "/timeline-four.svg"))
    }
}
