import Foundation
import KtstrHost
import KtstrMachine
import KtstrVMM
import KtstrQEMU
import KtstrSchedExt
import KtstrProtocol
import KtstrFixtures

/// `ktstr demo`: the main job end to end on the default kernel — set up (cached), run a
/// healthy scheduler and a failing one, show both outcomes and the failure dump.
struct DemoCommand: CLICommand {
    let name = "demo"
    let summary = "set up, run a healthy and a failing scheduler, show outcomes and the failure dump"
    let help = """
        USAGE: ktstr demo [--json] [--tiny]

        1. `ktstr setup` (cached after the first run): qemu, the default kernel, the test
           schedulers, the guest agent.
        2. scx_simple under 4 spinning workers for 3 s: a healthy run.
        3. ktstr's fault scheduler with --error-after 100: scx_bpf_error() after 100
           enqueues; the host freezes the guest and reads the failure dump out of its memory.
        Exit status 0 when both runs ended the way they should.

        OPTIONS:
          --json   print both RunOutcomes as a JSON array on stdout (progress on stderr)
          --tiny   instead, boot a hand-assembled guest on our own KVM VMM that prints "hello"
        """

    func run(_ args: inout Arguments) async throws -> Int32 {
        let json = args.flag("json")
        let tiny = args.flag("tiny")
        try args.finish()
        if tiny { return try Self.tinyGuest() }

        Progress.step("setting up: packages, kernel, schedulers, guest agent (cached after the first run)")
        let report = Provisioning.setup(progress: { Progress.step($0) },
                                        onStep: { Progress.step("\($0.name): \(SetupCommand.describe($0))") })
        guard report.ok else {
            throw CLIError("setup failed: " + report.steps.filter { $0.status == .failed }
                .map { "\($0.name): \($0.detail)" }.joined(separator: "; "))
        }
        let backend = try BackendSelection.decide(.auto)
        Progress.step("backend \(backend.backend.rawValue): \(backend.why)")

        let vm = VMConfig(cpus: 2, memoryMiB: 512)
        Progress.step("run 1/2: scx_simple, 4 spinners, 3 s (a healthy scheduler)")
        let healthy = try await SchedulerRun.run(vm: vm, scheduler: .simple, workload: .spinners(4),
                                                 duration: .seconds(3), artifactsDirectory: nil, log: .default)
        Progress.step("run 2/2: ktstr-fault --error-after 100 (scx_bpf_error after 100 enqueues)")
        let failing = try await SchedulerRun.run(vm: vm, scheduler: .fault("--error-after", "100"),
                                                 workload: .spinners(2), duration: .seconds(3),
                                                 artifactsDirectory: nil, log: .default)
        let healthyOK = healthy.schedulerExit.map { !$0.isError } ?? false
        let failingOK = failing.schedulerExit?.kind == .errorBPF

        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            FileHandle.standardOutput.write(try enc.encode([healthy, failing]) + Data("\n".utf8))
        } else {
            print("=== healthy: scx_simple ===")
            print(RunCommand.summary(healthy))
            print("=== failing: ktstr-fault --error-after 100 ===")
            print(RunCommand.summary(failing))
            if let dump = failing.failureDump {
                print("=== failure dump (read from the frozen guest's memory) ===")
                print(dump.text)
            }
            print("""
                Both runs \(healthyOK && failingOK ? "ended as expected" : "did NOT end as expected").
                Next: `swift test` runs the scheduler test suite; README.md shows how to write your own.
                """)
        }
        return healthyOK && failingOK ? 0 : 1
    }

    /// The KVM core on its own: a hand-assembled guest that prints "hello" on COM1.
    static func tinyGuest() throws -> Int32 {
        let result: TinyGuestDemo.Result
        do { result = try TinyGuestDemo.run(mode: .long) } catch { throw CLIError("\(error)") }
        print(result.console, terminator: "")
        guard result.exit == .shutdown else {
            throw CLIError("tiny guest ended with \(result.exit)\(result.detail.map { " (\($0))" } ?? "")")
        }
        return 0
    }
}
