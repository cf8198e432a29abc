import Foundation
import KtstrMachine

/// The files one run leaves: written once, by `SchedulerRun`, into the run's artifact
/// directory; the test traits attach the same files (by these names) when a test fails.
public enum RunArtifacts {
    public struct File: Sendable {
        public var name: String
        public var contents: String
    }

    /// outcome.json always; console.log always; scheduler.log, the full sampled timeline
    /// (timeline.json), the timeline drawn (timeline.svg, `TimelineSVG`) and the failure dump
    /// (text and JSON) and, for a scenario run, its tables (scenario.txt: cgroup shares, worker
    /// groups, checks, phases; the same data is in outcome.json) when the run has them.
    public static func files(of outcome: RunOutcome) -> [File] {
        var out = [File(name: "outcome.json", contents: json(outcome)), File(name: "console.log", contents: outcome.consoleTail)]
        if let l = outcome.schedulerLog { out.append(File(name: "scheduler.log", contents: l)) }
        if outcome.scenario != nil || outcome.checks != nil { out.append(File(name: "scenario.txt", contents: ScenarioTable.render(outcome))) }
        if let t = outcome.fullTimeline ?? outcome.timeline { out.append(File(name: "timeline.json", contents: json(t))) }
        if let d = outcome.failureDump {
            out.append(File(name: "failure-dump.txt", contents: d.text))
            out.append(File(name: "failure-dump.json", contents: json(d)))
        }
        if let t = outcome.fullTimeline ?? outcome.timeline {
            out.append(File(name: "timeline.svg", contents: TimelineSVG.render(t, workers: outcome.workers, title: timelineTitle(outcome))))
        }
        return out
    }

    /// "sched_ext timeline · 7.3.4 · qemu-tcg · exit error_stall".
    public static func timelineTitle(_ outcome: RunOutcome) -> String {
        "sched_ext timeline · \(outcome.kernelRelease ?? "unknown kernel") · \(outcome.backend.rawValue) · exit \(outcome.schedulerExit.map { $0.kind.name } ?? "none")"
    }

    /// Pretty, key-sorted JSON (stable diffs between runs).
    public static func json(_ value: some Encodable) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        do { return String(decoding: try e.encode(value), as: UTF8.self) } catch { return "{\"error\": \"\(error)\"}" }
    }

    /// Best effort: artifacts never fail a run; a failure to write is logged.
    static func write(_ outcome: RunOutcome, to dir: String, log: Log) {
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for f in files(of: outcome) { try Data(f.contents.utf8).write(to: URL(fileURLWithPath: dir + "/" + f.name)) }
        } catch {
            log.warning("cannot write artifacts to \(dir): \(error)")
        }
    }
}
