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
                         [--cpus N] [--memory MiB] [--duration S] [--timeout S]
                         [--backend auto|kvm|qemu|qemu-tcg] [--kernel PATH|NAME] [--artifacts DIR] [--json]

        Boots the guest kernel, starts the scheduler, runs the workload for --duration seconds
        (default 3), stops the scheduler and reports how it exited. Exit status 0 whenever the
        run completed, whatever the scheduler did; 1 when the run itself could not happen;
        2 for a usage error. Ctrl-C or SIGTERM stops the VM, says where the run was and exits
        130 / 143. --json prints the RunOutcome as JSON on stdout (also the partial one after
        Ctrl-C); progress goes to stderr.
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        let schedName = try args.option("scheduler") ?? "simple"
        let schedArgs = (try args.option("scheduler-args") ?? "").split(separator: " ").map(String.init)
        let workload = try Self.parseWorkload(try args.option("workload") ?? "spinners:2")
        let cpus = try args.intOption("cpus") ?? 2
        let memory = try args.intOption("memory") ?? 512
        let duration = try args.doubleOption("duration") ?? 3
        let timeout = try args.doubleOption("timeout") ?? 180
        let backendText = try args.option("backend") ?? "auto"
        let kernel = try args.option("kernel")
        let artifacts = try args.option("artifacts")
        let json = args.flag("json")
        try args.finish()

        guard (1...64).contains(cpus) else { throw CLIError("--cpus must be 1...64", status: 2) }
        guard (128...65536).contains(memory) else { throw CLIError("--memory must be 128...65536 MiB", status: 2) }
        guard duration >= 0, duration <= 3600 else { throw CLIError("--duration must be 0...3600 s", status: 2) }
        guard timeout > 0, timeout <= VMConfig.maxTimeoutSeconds else {
            throw CLIError("--timeout must be more than 0 and at most \(Int(VMConfig.maxTimeoutSeconds)) s", status: 2)
        }
        guard let backend = BackendChoice(rawValue: backendText) else {
            throw CLIError("--backend must be auto, kvm, qemu or qemu-tcg, not '\(backendText)'", status: 2)
        }
        let scheduler: SchedulerSpec = switch schedName {
        case "none": .none
        case "simple": .simple(args: schedArgs)
        case "fault": .fault(args: schedArgs)
        default: .binary(path: schedName, args: schedArgs)
        }
        // Checked before the progress line so a bad --kernel prints one line and exits 1.
        // --kernel: a tree, a bzImage/vmlinux, a registered name or a cached version.
        if let kernel { try KernelImage.validate(path: try Provisioning.kernel(named: kernel).image) }
        let vm = VMConfig(cpus: cpus, memoryMiB: memory, kernel: kernel, backend: backend, timeoutSeconds: timeout)
        Progress.step("booting \(cpus) vCPUs / \(memory) MiB, scheduler \(schedName), workload \(workload.kind.rawValue)×\(workload.count) for \(duration) s")
        let run: (value: RunOutcome, signal: Int32?)
        do {
            run = try await Interruption.run {
                try await SchedulerRun.run(vm: vm, scheduler: scheduler, workload: workload,
                                           duration: .milliseconds(Int(duration * 1000)),
                                           artifactsDirectory: artifacts, log: .default, partialOutcomeOnCancel: true)
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
            FileHandle.standardError.write(Data("ktstr run: interrupted by \(i.name) \(phase) after \(outcome.wallMillis) ms; the VM was stopped; \(where_)\n".utf8))
            return i.status
        }
        if json {
            try Self.printJSON(outcome)
        } else {
            print(Self.summary(outcome))
        }
        // Completed = the guest booted, the agent reported and the machine shut down cleanly;
        // what the scheduler did is in the outcome, not in the exit status.
        guard outcome.kernelRelease != nil, outcome.machineExit == .shutdown else {
            FileHandle.standardError.write(Data("ktstr run: the run did not complete (machine \(outcome.machineExit)): \(outcome.problems.first?.description ?? "no agent report")\n".utf8))
            return 1
        }
        return 0
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
