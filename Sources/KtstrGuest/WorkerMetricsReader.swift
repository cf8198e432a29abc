// What the agent reads about one scenario worker: a final sample (taken at the end of the
// run, or when a phase stops the worker) and the metrics made from it.
import Glibc
import KtstrProtocol

/// A worker as it was when last sampled.
struct FinalSample {
    var sched = WorkerSample()
    var counters: CounterSnapshot?
    var migrations: UInt64 = 0
    var voluntary: UInt64 = 0
    var involuntary: UInt64 = 0
    /// Its cgroup as /proc says (nil: unreadable).
    var cgroup: String?
    /// When it was taken (CLOCK_MONOTONIC ns).
    var at: UInt64 = 0

    static func take(_ w: Worker) -> FinalSample {
        var f = FinalSample(sched: Workload.sample(w), counters: CounterSnapshot(path: w.counterPath), cgroup: Cgroups.cgroupOf(w.pid))
        f.migrations = ProcStats.migrations(w.pid)
        (f.voluntary, f.involuntary) = ProcStats.switches(w.pid)
        f.at = Clock.nanos()
        return f
    }

    /// The largest gap between progress points, counting the one still open when sampled
    /// (from the last stamp, or from the start when the worker never stamped).
    func maxGap(startedAt: UInt64) -> UInt64 {
        let last = counters.map { $0[CounterLayout.lastStamp] }.flatMap { $0 > 0 ? $0 : nil } ?? startedAt
        let open = at > last ? at - last : 0
        return max(counters?[CounterLayout.maxGap] ?? 0, open)
    }

    /// (samples, p50, p99, max) from the histogram; nils without samples.
    var wake: (samples: UInt64, p50: UInt64?, p99: UInt64?, max: UInt64?) {
        guard let c = counters, c[CounterLayout.wakeSamples] > 0 else { return (0, nil, nil, nil) }
        let h = c.histogram, mx = c[CounterLayout.wakeMax]
        return (c[CounterLayout.wakeSamples], WakeHistogram.quantile(0.5, counts: h, max: mx), WakeHistogram.quantile(0.99, counts: h, max: mx), mx)
    }
}

enum ProcStats {
    /// schedstat's first field: time on CPU (ns).
    static func cpuNanos(_ pid: pid_t) -> UInt64 {
        Sys.readText("/proc/\(pid)/schedstat", limit: 256).flatMap { t in t.split(separator: " ").first.flatMap { UInt64($0) } } ?? 0
    }

    /// se.nr_migrations from /proc/<pid>/sched; 0 when unreadable.
    static func migrations(_ pid: pid_t) -> UInt64 {
        field(Sys.readText("/proc/\(pid)/sched", limit: 16384) ?? "", "se.nr_migrations") ?? 0
    }

    /// (voluntary, involuntary) context switches from /proc/<pid>/status.
    static func switches(_ pid: pid_t) -> (UInt64, UInt64) {
        let t = Sys.readText("/proc/\(pid)/status", limit: 16384) ?? ""
        return (field(t, "voluntary_ctxt_switches") ?? 0, field(t, "nonvoluntary_ctxt_switches") ?? 0)
    }

    /// The number after "name<spaces>:" on the line that starts with `name`.
    static func field(_ text: String, _ name: String) -> UInt64? {
        for line in Sys.lines(text) where line.hasPrefix(name) {
            let rest = line.dropFirst(name.count)
            guard let colon = rest.firstIndex(of: ":"), rest[..<colon].allSatisfy({ $0 == " " || $0 == "\t" }) else { continue }
            return UInt64(rest[rest.index(after: colon)...].trimmingSpaces)
        }
        return nil
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs.
    var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}
