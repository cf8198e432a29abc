import Foundation
import KtstrHost
import KtstrVMM
import KtstrMachine
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr bench boot`: ktstr's end-to-end runs on qemu TCG against a plain qemu boot of the
/// same kernel, measured in the same run, interleaved (A B C A B C ...).
enum BenchBoot {
    static let help = """
        boot    end-to-end wall time of ktstr runs on qemu TCG against a baseline booted in
                the same run, interleaved A B C D E A B C D E ... (default 5 iterations, 2 vCPUs,
                512 MiB); per variant min/median/p90/max wall ms (A: spawn → qemu exit;
                the others: the whole SchedulerRun.run call), bootMillis (machine start →
                agent hello) medians, and each variant's ratio of medians to A (target for
                D/A: ≤ 0.15).
                A  baseline: plain `qemu-system-x86_64 -accel tcg -M pc`, same kernel, CPU
                   model, -smp topology, -m and kernel command line as ktstr's runs; /init is
                   a ~250-byte static program that prints a marker and reboots (-no-reboot).
                   Differs from ktstr's qemu only in what the agent needs: no /dev/shm
                   memory backend, no COM2 channel, no QMP, no sh watchdog, console to a
                   file, and an initramfs without the agent, its libraries and a scheduler.
                B  SchedulerRun (backend forced to qemu-tcg), no scheduler, idle workload,
                   duration 0 (agent boot, hello, done, power-off).
                C  SchedulerRun, scx_simple, 2 spinners for 1 s.
                   B and C boot cold (VMConfig.bootSnapshot false).
                D  as B, restored from the configuration's boot snapshot (built before the
                   first sample when the cache has none; the build is not timed).
                E  as C, restored from the boot snapshot.
                A sample of D or E that fell back to a cold boot is invalid.
                Each sample is bounded at 120 s (qemu killed); an invalid sample is an error.
                Options: --iterations 1...1000, --cpus 1...64, --memory 128...65536.
        """

    static let sampleTimeout = Duration.seconds(120)

    enum Variant: CaseIterable { case baseline, noScheduler, simple, restoredNoScheduler, restoredSimple }

    static func run(_ args: inout Arguments) async throws -> Int32 {
        let opts: BenchBootOptions
        do { opts = try BenchBootOptions.parse(args.items) } catch { throw CLIError(error.description, status: 2) }
        args = Arguments([])
        let kernel: KernelArtifacts
        let baseline: BootBaseline
        do {
            kernel = try Provisioning.kernel(explicit: nil)
            _ = try Provisioning.agentBinary()
            _ = try Provisioning.scheduler("simple")
            baseline = BootBaseline(qemuPath: try Provisioning.qemuBinary(), kernelPath: kernel.image,
                                    topology: .flat(opts.cpus), memoryMiB: opts.memoryMiB)
        } catch {
            throw CLIError("\(error)")
        }
        let vm = VMConfig(cpus: opts.cpus, memoryMiB: opts.memoryMiB, backend: .qemuTCG,
                          timeoutSeconds: Double(sampleTimeout.components.seconds))
        // The snapshot is built once per configuration; that cold boot is not a sample.
        FileHandle.standardError.write(Data("preparing the boot snapshot (a cold boot and a save when the cache has none)\n".utf8))
        do { _ = try await ktstrRun(.restoredNoScheduler, vm: vm) } catch { throw CLIError("boot snapshot: \(error)") }

        var wall: [Variant: [Double]] = [:], boot: [Variant: [Double]] = [:]
        let loadBefore = BenchBootReport.loadAverage()
        let schedule = interleavedSchedule(Variant.allCases, iterations: opts.iterations)
        for (n, step) in schedule.enumerated() {
            let label = "[\(n + 1)/\(schedule.count)] \(name(step.variant)) #\(step.iteration)"
            do {
                switch step.variant {
                case .baseline:
                    wall[.baseline, default: []].append(try baseline.measure(timeout: sampleTimeout))
                case .noScheduler, .simple, .restoredNoScheduler, .restoredSimple:
                    let (w, b) = try await ktstrRun(step.variant, vm: vm)
                    wall[step.variant, default: []].append(w)
                    boot[step.variant, default: []].append(b)
                }
            } catch let e as CLIError {
                throw CLIError("\(label): \(e.message)")
            } catch {
                throw CLIError("\(label): \(error)")
            }
            let w = wall[step.variant]?.last ?? 0
            let b = boot[step.variant]?.last.map { String(format: ", hello after %.0f ms", $0) } ?? ""
            FileHandle.standardError.write(Data("\(label): \(String(format: "%.0f", w)) ms\(b) (load \(BenchBootReport.loadAverage()))\n".utf8))
        }
        func variant(_ v: Variant) -> BenchBootReport.Variant {
            BenchBootReport.Variant(name: name(v), what: what(v), wallSamples: wall[v] ?? [],
                                    bootSamples: v == .baseline ? nil : boot[v] ?? [])
        }
        let report = BenchBootReport(iterations: opts.iterations, cpus: opts.cpus, memoryMiB: opts.memoryMiB,
                                     kernel: kernel.image, kernelCmdline: BootBaseline.kernelCmdline,
                                     loadBefore: loadBefore, loadAfter: BenchBootReport.loadAverage(),
                                     baseline: variant(.baseline), others: Variant.allCases.dropFirst().map(variant))
        if opts.json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
        return 0
    }

    static func name(_ v: Variant) -> String {
        switch v {
        case .baseline: "qemu-baseline"
        case .noScheduler: "ktstr-none"
        case .simple: "ktstr-scx_simple"
        case .restoredNoScheduler: "ktstr-restored-none"
        case .restoredSimple: "ktstr-restored-scx_simple"
        }
    }

    static func what(_ v: Variant) -> String {
        switch v {
        case .baseline: "A: plain qemu-system-x86_64 -accel tcg boot to a minimal /init that reboots at once"
        case .noScheduler: "B: SchedulerRun: no scheduler, idle workload, duration 0"
        case .simple: "C: SchedulerRun: scx_simple, 2 spinners for 1 s"
        case .restoredNoScheduler: "D: as B, restored from the boot snapshot"
        case .restoredSimple: "E: as C, restored from the boot snapshot"
        }
    }

    /// One ktstr run: wall time of the whole `SchedulerRun.run` call (what a test pays) and
    /// the outcome's bootMillis. A run with problems is an invalid sample.
    static func ktstrRun(_ v: Variant, vm: VMConfig) async throws -> (wall: Double, boot: Double) {
        let simple = v == .simple || v == .restoredSimple
        let (scheduler, workload, duration): (SchedulerSpec, WorkloadSpec, Duration) =
            simple ? (.simple, .spinners(2), .seconds(1)) : (.none, .idle, .zero)
        let restored = v == .restoredNoScheduler || v == .restoredSimple
        var vm = vm
        vm.bootSnapshot = restored
        let clock = ContinuousClock()
        let t0 = clock.now
        let o = try await SchedulerRun.run(vm: vm, scheduler: scheduler, workload: workload, duration: duration,
                                           artifactsDirectory: nil, log: .silent)
        let took = clock.now - t0
        if restored, o.snapshot?.restored != true {
            throw CLIError("invalid sample: not restored from the boot snapshot: \(o.snapshot?.problem?.description ?? "no snapshot used (KTSTR_SNAPSHOT=off?)")")
        }
        guard o.problems.isEmpty, let boot = o.bootMillis else {
            let tail = o.consoleTail.split(separator: "\n").suffix(25).joined(separator: "\n    ")
            throw CLIError("invalid sample (\(o.machineExit)): \(o.problems.map(\.description).joined(separator: "; "))\n  console tail:\n    \(tail)")
        }
        return (Double(took.components.seconds) * 1e3 + Double(took.components.attoseconds) / 1e15, Double(boot))
    }
}
