import Foundation
import KtstrHost
import KtstrMachine
import KtstrProtocol

/// `ktstr gauntlet`: one scheduler over topologies × kernels, one row per cell.
struct GauntletCommand: CLICommand {
    let name = "gauntlet"
    let summary = "run a scheduler over a matrix of topologies × kernels"
    var help: String {
        """
        USAGE: ktstr gauntlet --scheduler simple|fault|none|PATH [--scheduler-args "ARGS"]
                              [--topologies T1,T2,...] [--kernels K1,K2,...] [--workload spinners:4]
                              [--scenario FILE.json] [--duration S] [--memory MiB] [--timeout S]
                              [--backend auto|kvm|qemu|qemu-tcg] [--json]

        Runs the scheduler once per cell of the matrix, one VM per cell, one after the other,
        every cell even when one fails, and prints one row per cell: topology, kernel, exit kind,
        checks passed (scheduler loaded, no error exit, all workers ran, no problems — a guest
        topology that differs from the request is a problem), wall time. --json prints the cells
        as a JSON array instead.

        OPTIONS:
          --topologies   presets (\(Topology.presets.map(\.name).joined(separator: ", "))) or
                         LxCxT / NnLxCxT specs (default: 1x2x1,2llc,2numa)
          --kernels      kernel images (bzImage or vmlinux), or `default` for the cached kernel
                         (default: default). Schedulers are built against the default kernel.
          --workload     as for `ktstr run` (default spinners:4)
          --duration S   seconds of workload per cell (default 3)
          --memory MiB   guest RAM per cell (default 512; NUMA nodes share it)
          --scenario F   run this scenario (docs/SCENARIOS.md) in every cell instead of --workload;
                         its checks must pass too (CHECKS shows "+ passed/total scenario")

        EXIT STATUS: 0 when every cell passed; 1 when any failed; 2 for a usage error.
        """
    }

    static let defaultTopologies = "1x2x1,2llc,2numa"

    func run(_ args: inout Arguments) async throws -> Int32 {
        guard let schedName = try args.option("scheduler") else {
            throw CLIError("--scheduler is required (simple, fault, none or a path)", status: 2)
        }
        let schedArgs = (try args.option("scheduler-args") ?? "").split(separator: " ").map(String.init)
        let topoText = try args.option("topologies") ?? Self.defaultTopologies
        let kernelText = try args.option("kernels") ?? "default"
        let workload = try RunCommand.parseWorkload(try args.option("workload") ?? "spinners:4")
        let duration = try args.doubleOption("duration") ?? 3
        let memory = try args.intOption("memory") ?? 512
        let timeout = try args.doubleOption("timeout") ?? 240
        let backendText = try args.option("backend") ?? "auto"
        let json = args.flag("json")
        let scenarioFile = try args.option("scenario")
        try args.finish()
        let scenario: Scenario?
        do { scenario = try scenarioFile.map(Scenario.load(path:)) } catch { throw CLIError("--scenario: \(error)", status: 2) }

        var topologies: [Topology] = []
        for name in topoText.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let t = Topology(named: name) else {
                throw CLIError("--topologies: '\(name)' is neither a preset (\(Topology.presets.map(\.name).joined(separator: ", "))) nor LxCxT / NnLxCxT", status: 2)
            }
            guard (1...64).contains(t.vcpuCount) else { throw CLIError("--topologies: '\(name)' has \(t.vcpuCount) vCPUs (1...64)", status: 2) }
            topologies.append(t)
        }
        let kernels = kernelText.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !topologies.isEmpty, !kernels.isEmpty else { throw CLIError("--topologies and --kernels need at least one entry", status: 2) }
        guard duration >= 0, duration <= 3600 else { throw CLIError("--duration must be 0...3600 s", status: 2) }
        try RunArguments.checkMemory(memory)
        try RunArguments.checkTimeout(timeout)
        guard let backend = BackendChoice(rawValue: backendText) else {
            throw CLIError("--backend must be auto, kvm, qemu or qemu-tcg, not '\(backendText)'", status: 2)
        }
        for k in kernels where k != "default" { try RunArguments.checkKernel(k) }
        let scheduler = RunArguments.scheduler(schedName, args: schedArgs)

        var cells: [Gauntlet.Cell] = []
        let total = topologies.count * kernels.count
        for kernel in kernels {
            for topo in topologies {
                let label = topo.presetName ?? topo.description
                let kernelLabel = kernel == "default" ? "default" : (kernel as NSString).lastPathComponent
                let what = scenario.map { "scenario \($0.name)" } ?? "\(workload.kind.rawValue)×\(workload.count) for \(duration) s"
                Progress.step("[\(cells.count + 1)/\(total)] \(label) on \(kernelLabel): scheduler \(schedName), \(what)")
                let vm = VMConfig(memoryMiB: memory, topology: topo, kernel: kernel == "default" ? nil : kernel,
                                  backend: backend, timeoutSeconds: timeout)
                let started = ContinuousClock.now
                do {
                    let o = try await SchedulerRun.run(vm: vm, scheduler: scheduler, workload: workload,
                                                       duration: .milliseconds(Int(duration * 1000)),
                                                       artifactsDirectory: nil, log: .default, scenario: scenario)
                    cells.append(Gauntlet.cell(topology: topo, kernel: kernelLabel, outcome: o, expectScheduler: schedName != "none"))
                } catch is CancellationError {
                    throw CLIError("cancelled after \(cells.count) of \(total) cells", status: 130)
                } catch {
                    let wall = ContinuousClock.now - started
                    cells.append(Gauntlet.failedCell(topology: topo, kernel: kernelLabel, error: error,
                                                     wallMillis: Int(wall.components.seconds * 1000)))
                }
            }
        }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            FileHandle.standardOutput.write(try enc.encode(cells) + Data("\n".utf8))
        } else {
            print(Gauntlet.table(cells))
        }
        return cells.allSatisfy(\.passed) ? 0 : 1
    }
}
