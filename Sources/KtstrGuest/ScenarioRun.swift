// Plan mode "scenario" (RunPlan.scenario, docs/PROTOCOLS.md "Scenarios"): set up the cgroups,
// start the workers, run the phases on time, snapshot progress at every phase boundary, then
// report `scenario` and `workers`, stop everything and power off.
import Glibc
import KtstrProtocol

/// One worker process of a scenario.
struct ScenarioProc {
    var worker: Worker
    /// Index into `Scenario.groups`.
    var group: Int
    var work: WorkType
    /// Where it should be (its group's cgroup, then where a `move` put it).
    var cgroup: String
    /// Set once it was sampled for the last time (stopped by a phase, or the run ended).
    var final: FinalSample?
    /// Killed and waited for.
    var reaped = false
}

/// A scenario being run: its processes and what was measured so far.
struct ScenarioRunState {
    let scenario: Scenario
    let groups: [Scenario.Group]
    let groupIndex: [String: Int]
    var procs: [ScenarioProc] = []
    var started = Set<Int>()
    var problems: [String] = []
    /// cpu.weight per cgroup as configured now.
    var weights: [String: Int] = [:]
    /// Per phase boundary: (iterations, cpu ns) of each process existing then; usage_usec per cgroup.
    var workerMarks: [[(UInt64, UInt64)]] = []
    var cgroupMarks: [[UInt64]] = []

    init(_ s: Scenario) {
        scenario = s
        groups = s.groups
        groupIndex = Dictionary(groups.enumerated().map { ($0.element.name, $0.offset) }, uniquingKeysWith: { a, _ in a })
        for c in s.cgroups { if let w = c.weight { weights[c.path] = w } }
    }

    mutating func problem(_ text: String) {
        problems.append(text)
        Channel.problem("scenario: " + text)
    }

    /// Starts every process of group `g`.
    mutating func start(_ g: Int) {
        guard started.insert(g).inserted else { problem("group '\(groups[g].name)' is already started"); return }
        let group = groups[g], w = group.workers
        guard let work = w.workType else { problem("group '\(group.name)': unknown work type '\(w.work)'"); return }
        let fanOut = w.fanOut ?? ScenarioWorkers.defaultFanOut
        let roles: [String] = switch work {
        case .futexPingPong, .pipePingPong: ["a", "b"]
        case .fanOut: ["parent"] + Array(repeating: "child", count: fanOut)
        default: [""]
        }
        for unit in 0..<w.count {
            for role in roles {
                let cfg = WorkerConfig(index: procs.count, work: work, role: role, rendezvous: "/tmp/ktstr-sc\(g)-\(unit)",
                                       cgroupDir: group.cgroup.isEmpty ? "" : Cgroups.dir(group.cgroup), nice: w.nice,
                                       policy: w.policy.flatMap(ScenarioPolicy.init(rawValue:)), periodMicros: w.periodMicros,
                                       burstMicros: w.burstMicros, workingSetKiB: w.workingSetKiB, fanOut: fanOut)
                switch Sys.spawn(Workload.selfExe, cfg.arguments, output: nil, env: ["PATH=/bin:/usr/bin"]) {
                case let .success(pid):
                    procs.append(ScenarioProc(worker: Worker(index: cfg.index, pid: pid, counterPath: cfg.counterPath, startedAt: Clock.nanos()),
                                              group: g, work: work, cgroup: group.cgroup))
                case let .failure(e): problem("group '\(group.name)': \(e.text)")
                }
            }
        }
    }

    /// The last sample of a live process, then SIGKILL.
    mutating func stop(_ k: Int) {
        guard !procs[k].reaped else { return }
        if procs[k].final == nil { procs[k].final = FinalSample.take(procs[k].worker) }
        kill(procs[k].worker.pid, SIGKILL)
        _ = Sys.waitFor(procs[k].worker.pid, millis: 5000)
        procs[k].reaped = true
    }

    /// Every process not stopped yet: SIGKILL all, then wait for each.
    mutating func stopAll() {
        for p in procs where !p.reaped { kill(p.worker.pid, SIGKILL) }
        for k in procs.indices { stop(k) }
    }

    /// Snapshot at a phase boundary (a stopped process: its last sample).
    mutating func mark() {
        workerMarks.append(procs.map { p in
            if let f = p.final { return (f.counters?[CounterLayout.iterations] ?? 0, f.sched.cpuNanos) }
            return (Workload.iterations(p.worker), ProcStats.cpuNanos(p.worker.pid))
        })
        cgroupMarks.append(scenario.cgroups.map { Cgroups.usageMicros($0.path) ?? 0 })
    }

    mutating func apply(_ a: ScenarioAction, phase: String) {
        let what = "phase '\(phase)', \(a.op)"
        if a.kind == .weight {
            guard let cg = a.cgroup, let v = a.value else { return }
            if let e = Cgroups.writeFile(Cgroups.dir(cg) + "/cpu.weight", String(v)) { problem("\(what): \(e)") } else { weights[cg] = v }
            return
        }
        guard let name = a.workers, let g = groupIndex[name] else { problem("\(what): no group '\(a.workers ?? "")'"); return }
        if a.kind == .start { start(g); return }
        let live = procs.indices.filter { procs[$0].group == g && !procs[$0].reaped }
        for k in live {
            let pid = procs[k].worker.pid
            switch a.kind {
            case .stop: stop(k)
            case .move:
                let to = a.cgroup ?? ""
                if let e = Cgroups.move(pid, to: to) { problem("\(what) \(name): \(e)") } else { procs[k].cgroup = to }
            case .nice: if !SchedCalls.setNice(pid, a.value ?? 0) { problem("\(what) \(name): setpriority: \(Sys.errnoText())") }
            case .affinity:
                let cpus = a.cpus.flatMap { GuestTopology.cpus($0) } ?? []
                if !SchedCalls.setAffinity(pid, cpus) { problem("\(what) \(name): sched_setaffinity(\(a.cpus ?? "")): \(Sys.errnoText())") }
            case .policy:
                let p = a.policy.flatMap(ScenarioPolicy.init(rawValue:)) ?? .other
                if !SchedCalls.setPolicy(pid, p) { problem("\(what) \(name): sched_setscheduler(\(p.rawValue)): \(Sys.errnoText())") }
            case .start, .weight, nil: break
            }
        }
    }

    /// The report: spans from the phase starts and the end, slices between consecutive marks.
    func report(spans: [(String, Int)], endMillis: Int) -> ScenarioReport {
        let phaseSpans = spans.enumerated().map { k, s in
            PhaseSpan(name: s.0, startMillis: s.1, endMillis: k + 1 < spans.count ? spans[k + 1].1 : endMillis)
        }
        func diff(_ a: UInt64, _ b: UInt64) -> UInt64 { b > a ? b - a : 0 }
        let workers = procs.enumerated().map { k, p in
            let f = p.final ?? FinalSample()
            let slices = (0..<spans.count).map { s in
                let lo = k < workerMarks[s].count ? workerMarks[s][k] : (0, 0)
                let hi = k < workerMarks[s + 1].count ? workerMarks[s + 1][k] : (0, 0)
                return PhaseSlice(iterations: diff(lo.0, hi.0), cpuNanos: diff(lo.1, hi.1))
            }
            let wake = p.work.measuresWakeLatency ? f.wake : (nil, nil, nil, nil)
            return WorkerMetrics(index: p.worker.index, group: groups[p.group].name, cgroup: f.cgroup ?? p.cgroup, work: p.work.rawValue,
                                 pid: Int(p.worker.pid), iterations: f.counters?[CounterLayout.iterations] ?? 0, cpuNanos: f.sched.cpuNanos,
                                 runDelayNanos: f.sched.waitNanos, maxGapNanos: f.maxGap(startedAt: p.worker.startedAt),
                                 wakeP50Nanos: wake.1, wakeP99Nanos: wake.2, wakeMaxNanos: wake.3, wakeSamples: wake.0,
                                 migrations: f.migrations, cpusUsed: f.counters?.cpus ?? [], voluntarySwitches: f.voluntary,
                                 involuntarySwitches: f.involuntary, phases: slices)
        }
        let cgroups = scenario.cgroups.enumerated().map { k, c in
            CgroupUsage(path: c.path, weight: weights[c.path], cpus: Cgroups.effectiveCPUs(c.path),
                        usageMicros: diff(cgroupMarks[0][k], cgroupMarks[spans.count][k]),
                        phases: (0..<spans.count).map { diff(cgroupMarks[$0][k], cgroupMarks[$0 + 1][k]) })
        }
        return ScenarioReport(phases: phaseSpans, workers: workers, cgroups: cgroups, problems: problems)
    }
}

enum ScenarioMode {
    static func run(plan: RunPlan, scenario: Scenario, scheduler sched: pid_t?) -> Never {
        var st = ScenarioRunState(scenario)
        for p in Cgroups.setUp(scenario) { st.problem(p) }
        let runMillis = plan.runMillis
        // Phases past the end are never entered; a phase at 0 replaces the implicit "start".
        var pending = scenario.phases.filter { $0.atMillis < runMillis }
        var spans: [(String, Int)] = pending.first?.atMillis == 0 ? [] : [("start", 0)]
        let later = scenario.startedLater

        st.cgroupMarks.append(scenario.cgroups.map { Cgroups.usageMicros($0.path) ?? 0 })
        let begin = Sys.nowMillis()
        for g in st.groups.indices where !later.contains(st.groups[g].name) { st.start(g) }
        // The processes are new: everything they did so far belongs to the first phase.
        st.workerMarks.append(st.procs.map { _ in (0, 0) })
        if let first = pending.first, first.atMillis == 0 {
            pending.removeFirst()
            spans.append((first.name, 0))
            for a in first.actions { st.apply(a, phase: first.name) }
        }

        var exitStatus: Int32?
        var cutShort = false
        run: while true {
            let target = begin + (pending.first?.atMillis ?? runMillis)
            while Sys.nowMillis() < target {
                if Agent.schedulerStopped(sched, exitStatus: &exitStatus) { cutShort = true; break run }
                Sys.sleepMillis(min(50, target - Sys.nowMillis()))
            }
            guard !pending.isEmpty else { break }
            let phase = pending.removeFirst()
            st.mark()
            spans.append((phase.name, Sys.nowMillis() - begin))
            for a in phase.actions { st.apply(a, phase: phase.name) }
        }
        let stoppedAt = Sys.nowMillis()
        // Final samples first: the last mark reads them, so the phase slices add up to the totals.
        for k in st.procs.indices where st.procs[k].final == nil { st.procs[k].final = FinalSample.take(st.procs[k].worker) }
        st.mark()
        if cutShort, !st.procs.isEmpty {
            Channel.problem("\(Agent.seconds(stoppedAt - begin)) s of the planned \(Agent.seconds(runMillis)) s", kind: .workloadCutShort)
        }
        for p in st.procs {
            let failed = SetupFailure(rawValue: p.final?.counters?[CounterLayout.setupFailures] ?? 0)
            for d in failed.descriptions { st.problem("worker \(p.worker.index) (\(st.groups[p.group].name)) \(d)") }
            if let at = p.final?.cgroup, at != p.cgroup { st.problem("worker \(p.worker.index) (\(st.groups[p.group].name)) is in '\(at)', not '\(p.cgroup)'") }
        }
        st.stopAll()

        if let pid = sched, exitStatus == nil { exitStatus = Agent.stopScheduler(pid) }
        if plan.scheduler != nil { Agent.reportExit(plan: plan, status: exitStatus) }

        Channel.send(.scenario(fitting(st.report(spans: spans, endMillis: stoppedAt - begin))))
        Channel.send(.workers(st.procs.map { p in
            let f = p.final ?? FinalSample()
            return WorkerStats(index: p.worker.index, pid: Int(p.worker.pid), cpuNanos: f.sched.cpuNanos, waitNanos: f.sched.waitNanos,
                               runs: f.sched.runs, iterations: f.counters?[CounterLayout.iterations] ?? 0, lastCPU: f.sched.lastCPU)
        }))
        Agent.finish(problem: nil)
    }

    /// The report cut to fit one channel line: per-worker phase slices go first, then workers
    /// from the end (each cut is named in `problems`).
    static func fitting(_ report: ScenarioReport) -> ScenarioReport {
        func fits(_ r: ScenarioReport) -> Bool { AgentMessage.scenario(r).line().utf8.count <= AgentMessage.maxLineBytes }
        var r = report
        if fits(r) { return r }
        for k in r.workers.indices { r.workers[k].phases = [] }
        r.problems.append("the report was too long for one message: per-worker phase slices were left out")
        while !fits(r), !r.workers.isEmpty {
            r.workers.removeLast(max(1, r.workers.count / 8))
            if r.problems.last?.hasPrefix("workers after") == false { r.problems.append("") }
            r.problems[r.problems.count - 1] = "workers after index \(r.workers.last?.index ?? -1) were left out (too long for one message)"
        }
        return r
    }
}
