import Foundation
import KtstrHost
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr run`: one scheduler + workload in a fresh VM; the outcome on stdout.
struct RunCommand: CLICommand {
    let name = "run"
    let summary = "run a scheduler and a workload in a fresh VM"
    let help = """
        USAGE: ktstr run [--scheduler simple|fault|none|PATH] [--scheduler-args "ARGS"]
                         [--workload spinners:4|sleepers:4|pingpong:1|forkstorm:2|idle]
                         [--cpus N | --topology T] [--memory MiB] [--duration S] [--timeout S]
                         [--backend auto|kvm|qemu|qemu-tcg] [--kernel PATH|NAME] [--artifacts DIR] [--json]
                         [--timeline FILE.svg]
                         [--bpf-set MAP.VAR=VALUE@SECONDS]... [--watchdog-timeout S]
               ktstr run --scenario FILE.json [--baseline eevdf|simple|fault|PATH] [--scheduler ...] [--json] [...]

        Boots the guest kernel, starts the scheduler, runs the workload for --duration seconds
        (default 3), stops the scheduler and reports how it exited. Exit status 0 whenever the
        run completed, whatever the scheduler did; 1 when the run itself could not happen;
        2 for a usage error. --topology takes a preset (1x1x1, 1x2x1, 2llc, 2numa, smt) or
        LxCxT / NnLxCxT (N NUMA nodes, L LLCs, C cores per LLC, T threads per core) instead of
        --cpus. Ctrl-C or SIGTERM stops the VM, says where the run was and exits 130 / 143. --json prints the RunOutcome as JSON on stdout (also the partial one after
        Ctrl-C); progress goes to stderr. --timeline FILE.svg draws what the host sampled from
        the guest's runqueues (one lane per CPU: running task, nr_running, markers) into FILE;
        a run without a timeline (older agent, no monitor) says so on stderr and exits 1.
        --bpf-set (repeatable) writes integer global VAR of the scheduler's BPF map MAP (kernel
        name, e.g. ktstr_fa.bss, or a suffix such as .bss) SECONDS after the scheduler enabled,
        in guest memory; the writes are listed in the outcome. --watchdog-timeout S sets the
        kernel's sched_ext watchdog timeout to S seconds once the scheduler enabled.
        --scheduler-args go to the scheduler; the fault scheduler takes --error-after N,
        --stall-pid-every N [--timeout-ms MS], --exit-after N --code C, --bogus-dsq, and, unfair
        on purpose, --favour-comm PREFIX [--favour-count N] [--favour-slice-ms MS] (the first N
        tasks whose comm starts with PREFIX always run first; Schedulers/README.md).

        --scenario FILE.json runs a scenario (cgroups with cpu.weight/cpuset.cpus/cpu.max, workers
        of 13 work types, phases, checks: docs/SCENARIOS.md, Examples/scenarios/) instead of
        --workload; its durationMillis, when set, replaces --duration. The report has a table per
        cgroup (CPU share), per worker group, per check (measured against the limit) and per
        phase; --json prints the outcome with `scenario`, `cgroups: [{path, weight, cpuShare}]`
        and `checks: [{name, passed, measured, limit, ...}]`. --baseline eevdf (or another
        scheduler) runs the same scenario again under it, same VM shape, one VM after the other,
        and adds the ratios scheduler ÷ baseline (throughput, run delay, wake latency p99); with
        --json the output is {scheduler, baseline, ratios}. The exit status does not depend on
        the checks (they are in the output); 1 when a run did not complete.
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        let schedName = try args.option("scheduler") ?? "simple"
        let schedArgs = (try args.option("scheduler-args") ?? "").split(separator: " ").map(String.init)
        let workload = try Self.parseWorkload(try args.option("workload") ?? "spinners:2")
        let cpus = try args.intOption("cpus") ?? 2
        let topologyName = try args.option("topology")
        let memory = try args.intOption("memory") ?? 512
        let duration = try args.doubleOption("duration") ?? 3
        let timeout = try args.doubleOption("timeout") ?? 180
        let backendText = try args.option("backend") ?? "auto"
        let kernel = try args.option("kernel")
        let artifacts = try args.option("artifacts")
        let json = args.flag("json")
        let timelineFile = try args.option("timeline")
        let bpfSets: [BPFSetSpec]
        do { bpfSets = try args.options("bpf-set").map { t throws(LiveBPFError) in try BPFSetSpec(parsing: t) } }
        catch { throw CLIError("\(error)", status: 2) }
        let watchdogTimeout = try args.doubleOption("watchdog-timeout")
        let scenarioFile = try args.option("scenario")
        let baselineName = try args.option("baseline")
        try args.finish()
        if baselineName != nil, scenarioFile == nil { throw CLIError("--baseline needs --scenario FILE.json", status: 2) }
        // Before anything boots: a bad file is one line naming the problem.
        let scenario: Scenario?
        do { scenario = try scenarioFile.map(Scenario.load(path:)) } catch { throw CLIError("--scenario: \(error)", status: 2) }
        if scenario != nil, !bpfSets.isEmpty || watchdogTimeout != nil || timelineFile != nil, baselineName != nil {
            throw CLIError("--baseline runs two VMs: --bpf-set, --watchdog-timeout and --timeline apply to one run only; drop them or --baseline", status: 2)
        }
        if let w = watchdogTimeout, !(w > 0 && w <= 30) { throw CLIError("--watchdog-timeout must be more than 0 and at most 30 s", status: 2) }

        guard (1...64).contains(cpus) else { throw CLIError("--cpus must be 1...64", status: 2) }
        try RunArguments.checkMemory(memory)
        guard duration >= 0, duration <= 3600 else { throw CLIError("--duration must be 0...3600 s", status: 2) }
        try RunArguments.checkTimeout(timeout)
        let backend = try Self.backend(backendText)
        let scheduler = RunArguments.scheduler(schedName, args: schedArgs)
        // Checked before the progress line so a bad --kernel prints one line and exits 1.
        // --kernel: a tree, a bzImage/vmlinux, a registered name or a cached version.
        if let kernel { try RunArguments.checkKernel(kernel) }
        if let timelineFile { try Self.checkWritable(timelineFile) }
        let topology = try topologyName.map(Self.topology)
        let vm = VMConfig(cpus: cpus, memoryMiB: memory, topology: topology, kernel: kernel, backend: backend, timeoutSeconds: timeout)
        if let scenario, let baselineName {
            return try await Self.compare(scenario: scenario, baseline: RunArguments.scheduler(baselineName == "eevdf" ? "none" : baselineName, args: []),
                                          scheduler: scheduler, baselineName: baselineName, vm: vm,
                                          duration: duration, artifacts: artifacts, json: json)
        }
        let what = scenario.map { "scenario \($0.name) for \(Double($0.durationMillis ?? Int(duration * 1000)) / 1000) s" }
            ?? "workload \(workload.kind.rawValue)×\(workload.count) for \(duration) s"
        Progress.step("booting \(vm.cpus) vCPUs (\(vm.topology)) / \(memory) MiB, scheduler \(schedName), \(what)")
        let run: (value: RunOutcome, signal: Int32?)
        do {
            run = try await Interruption.run {
                try await SchedulerRun.run(vm: vm, scheduler: scheduler, workload: workload,
                                           duration: .milliseconds(Int(duration * 1000)),
                                           artifactsDirectory: artifacts, log: .default, partialOutcomeOnCancel: true,
                                           live: LiveOptions(watchdogTimeout: watchdogTimeout.map { .milliseconds(Int($0 * 1000)) },
                                                             during: bpfSets.isEmpty ? nil : BPFSetSpec.during(bpfSets)),
                                           scenario: scenario)
            }
        } catch let i as Interruption.Interrupted {
            throw CLIError("interrupted by \(i.name) before the VM started; nothing is left running", status: i.status)
        } catch let e as SchedulerRun.RunError {
            throw CLIError("\(e)", status: 1) // one line: what is wrong and the fix
        }
        let outcome = run.value
        if let sig = run.signal {
            // One line on stderr; with --json the partial outcome still goes to stdout.
            let i = Interruption.Interrupted(signal: sig)
            let phase = outcome.kernelRelease == nil ? "while the guest was booting" : "while the scheduler and workload ran"
            let where_ = artifacts.map { "artifacts in \($0)" } ?? "no artifacts (pass --artifacts DIR to keep them)"
            if json { try Self.printJSON(outcome) }
            if let timelineFile, outcome.timeline != nil { _ = Self.writeTimeline(outcome, to: timelineFile) }
            FileHandle.standardError.write(Data("ktstr run: interrupted by \(i.name) \(phase) after \(outcome.wallMillis) ms; the VM was stopped; \(where_)\n".utf8))
            return i.status
        }
        if json {
            try Self.printJSON(outcome)
        } else {
            print(Self.summary(outcome))
            if outcome.scenario != nil || outcome.checks != nil { print(ScenarioTable.render(outcome), terminator: "") }
        }
        // --timeline: a failure to draw it is an error of its own (1); otherwise the status is the run's.
        let timelineWritten = timelineFile.map { Self.writeTimeline(outcome, to: $0) } ?? true
        // Completed = the guest booted, the agent reported and the machine shut down cleanly;
        // what the scheduler did is in the outcome, not in the exit status.
        guard outcome.kernelRelease != nil, outcome.machineExit == .shutdown else {
            FileHandle.standardError.write(Data("ktstr run: the run did not complete (machine \(outcome.machineExit)): \(outcome.problems.first?.description ?? "no agent report")\n".utf8))
            return 1
        }
        return timelineWritten ? 0 : 1
    }

    /// `ktstr run --scenario F --baseline B`: both runs, then the ratios.
    static func compare(scenario: Scenario, baseline: SchedulerSpec, scheduler: SchedulerSpec, baselineName: String, vm: VMConfig,
                        duration: Double, artifacts: String?, json: Bool) async throws -> Int32 {
        if case let .binary(path, _) = baseline, !FileManager.default.isExecutableFile(atPath: path) {
            throw CLIError("--baseline must be eevdf, none, simple, fault or the path of a scheduler binary, not '\(baselineName)'", status: 2)
        }
        Progress.step("scenario \(scenario.name): two runs, the scheduler then the baseline (\(baselineName)), \(vm.cpus) vCPUs each")
        let result: (value: ScenarioComparison, signal: Int32?)
        do {
            result = try await Interruption.run {
                try await SchedulerRun.compare(vm: vm, scheduler: scheduler, baseline: baseline, scenario: scenario,
                                               duration: .milliseconds(Int(duration * 1000)), artifactsDirectory: artifacts,
                                               log: .default, partialOutcomeOnCancel: true)
            }
        } catch let i as Interruption.Interrupted {
            throw CLIError("interrupted by \(i.name) before a VM started; nothing is left running", status: i.status)
        } catch let e as SchedulerRun.RunError {
            throw CLIError("\(e)", status: 1)
        }
        let c = result.value
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            FileHandle.standardOutput.write(try enc.encode(c) + Data("\n".utf8))
        } else {
            print("=== scheduler ===\n" + summary(c.scheduler) + ScenarioTable.render(c.scheduler))
            print("=== baseline (\(baselineName)) ===\n" + summary(c.baseline) + ScenarioTable.render(c.baseline))
            print(ScenarioTable.ratios(c.ratios), terminator: "")
        }
        if let sig = result.signal { return Interruption.Interrupted(signal: sig).status }
        let incomplete = [c.scheduler, c.baseline].filter { $0.kernelRelease == nil || $0.machineExit != .shutdown }
        if let o = incomplete.first {
            FileHandle.standardError.write(Data("ktstr run: a run did not complete (machine \(o.machineExit)): \(o.problems.first?.description ?? "no agent report")\n".utf8))
            return 1
        }
        return 0
    }

    static func topology(_ name: String) throws -> Topology {
        guard let t = Topology(named: name), (1...64).contains(t.vcpuCount) else {
            throw CLIError("--topology must be a preset (\(Topology.presets.map(\.name).joined(separator: ", "))) or LxCxT / NnLxCxT with 1...64 vCPUs, not '\(name)'", status: 2)
        }
        return t
    }

    static func backend(_ text: String) throws -> BackendChoice {
        guard let b = BackendChoice(rawValue: text) else {
            throw CLIError("--backend must be auto, kvm, qemu or qemu-tcg, not '\(text)'", status: 2)
        }
        return b
    }

    /// --timeline's directory must exist before a VM is booted for it.
    static func checkWritable(_ path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.isEmpty ? "." : dir, isDirectory: &isDir), isDir.boolValue else {
            throw CLIError("--timeline: directory '\(dir)' does not exist", status: 2)
        }
    }

    /// Writes the outcome's timeline as SVG; false (with one line on stderr) when there is none
    /// or the file cannot be written.
    static func writeTimeline(_ outcome: RunOutcome, to path: String) -> Bool {
        guard let t = outcome.timeline else {
            FileHandle.standardError.write(Data("ktstr run: --timeline: this run has no timeline (the host sampled nothing: older agent or no monitor); \(path) not written\n".utf8))
            return false
        }
        let svg = TimelineSVG.render(t, workers: outcome.workers, title: RunArtifacts.timelineTitle(outcome))
        do {
            try Data(svg.utf8).write(to: URL(fileURLWithPath: path))
            Progress.step("timeline: \(path) (\(t.samples.count) samples, \(t.markers.count) markers)")
            return true
        } catch {
            FileHandle.standardError.write(Data("ktstr run: --timeline: cannot write \(path): \(error.localizedDescription)\n".utf8))
            return false
        }
    }

    static func printJSON(_ outcome: RunOutcome) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        FileHandle.standardOutput.write(try enc.encode(outcome) + Data("\n".utf8))
    }

    static func parseWorkload(_ s: String) throws -> WorkloadSpec {
        if s == WorkloadSpec.Kind.idle.rawValue { return .idle }
        let parts = s.split(separator: ":", maxSplits: 1).map(String.init)
        let n = parts.count == 2 ? Int(parts[1]) : 1
        guard let n, (0...256).contains(n) else { throw CLIError("--workload: count in '\(s)' must be 0...256", status: 2) }
        // The plan's kind names, plus the underscore-free spellings the CLI has always taken.
        let aliases = ["pingpong": WorkloadSpec.Kind.pingPong, "forkstorm": .forkStorm]
        switch aliases[parts[0]] ?? WorkloadSpec.Kind(rawValue: parts[0]) {
        case .spinners: return .spinners(n)
        case .sleepers: return .sleepers(n)
        case .pingPong: return .pingPong(pairs: n)
        case .forkStorm: return .forkStorm(n)
        case .idle, nil: throw CLIError("--workload must be spinners:N, sleepers:N, pingpong:N, forkstorm:N or idle", status: 2)
        }
    }

    static func summary(_ o: RunOutcome) -> String {
        var s = "backend       \(o.backend.rawValue)\n"
        s += "kernel        \(o.kernelRelease ?? "?")\n"
        if let t = o.guestTopology {
            s += "topology      L3 groups \(t.l3Groups.joined(separator: " ")), NUMA nodes \(t.numaNodes.joined(separator: " "))\n"
        }
        s += "boot          \(o.bootMillis.map { "\($0) ms" } ?? "-")   wall \(o.wallMillis) ms   machine \(o.machineExit)\n"
        if let e = o.schedulerExit {
            s += "exit          \(e.kind) (\(e.kindValue.map(String.init) ?? "?")) code \(e.code.map(String.init) ?? "unknown")"
                + (e.source.map { "   from \($0 == .memory ? "guest memory" : $0 == .loader ? "the loader's output" : "the kernel log")" } ?? "") + "\n"
            s += "reason        \(e.reason)\n"
            if !e.message.isEmpty { s += "message       \(e.message)\n" }
        } else {
            s += "exit          (no scheduler exit)\n"
        }
        for w in o.workers {
            s += "worker \(w.index)      pid \(w.pid) cpu \(w.cpuNanos / 1_000_000) ms wait \(w.waitNanos / 1_000_000) ms runs \(w.runs) iterations \(w.iterations) last cpu \(w.lastCPU.map(String.init) ?? "?")\n"
        }
        for w in o.bpfWrites ?? [] {
            s += "bpf write     \(w.map).\(w.target) \(w.old) -> \(w.new) at +\(w.millisAfterEnabled ?? 0) ms after enable\n"
        }
        if let w = o.watchdogOverride {
            s += "watchdog      \(w.jiffies.map { "\($0) jiffies" } ?? "not applied") (HZ \(w.hz.map(String.init) ?? "?"), was \(w.originalJiffies.map(String.init) ?? "?"))\(w.bridge.map { "; bridge: \($0)" } ?? "")\n"
        }
        for p in o.problems { s += "problem       \(p)\n" }
        if let d = o.failureDump {
            s += "--- failure dump (read from the frozen guest) ---\n" + d.text + "\n"
        }
        if !o.problems.isEmpty {
            s += "--- console tail ---\n" + String(o.consoleTail.suffix(3000))
        }
        return s
    }
}
