import Foundation
import Testing
import KtstrTesting

/// What the end-to-end tests need on this host; nil when everything is there.
enum E2E {
    static func missing(scheduler: String?) -> String? {
        do {
            _ = try Provisioning.qemuBinary()
            _ = try Provisioning.kernel()
            _ = try Provisioning.agentBinary()
            if let scheduler { _ = try Provisioning.scheduler(scheduler) }
            return nil
        } catch {
            let text = "\(error)"
            return text.contains("ktstr setup") ? text : text + " (run `swift run ktstr setup`)"
        }
    }

    static let vm = VMConfig(cpus: 2, memoryMiB: 512, timeoutSeconds: 240)

    /// One run, its wall time on stderr (for the report: how long each e2e test's VM took).
    /// A guest kernel crash (seen rarely under TCG: an int3 Oops while sched_ext patches its
    /// static keys on disable) says nothing about the scheduler: such a run is retried once.
    static func run(_ name: String, _ s: SchedulerSpec, _ w: WorkloadSpec = .spinners(2),
                    seconds: Int = 3, vm: VMConfig = vm) async throws -> RunOutcome {
        let o = try await runOnce(name, s, w, seconds: seconds, vm: vm)
        guard o.problems.contains(where: { $0.hasPrefix("guest kernel:") }) else { return o }
        FileHandle.standardError.write(Data("e2e \(name): the guest kernel crashed (\(o.problems.first ?? "")); retrying once\n".utf8))
        return try await runOnce(name + " (retry)", s, w, seconds: seconds, vm: vm)
    }

    static func runOnce(_ name: String, _ s: SchedulerSpec, _ w: WorkloadSpec,
                        seconds: Int, vm: VMConfig) async throws -> RunOutcome {
        let t0 = ContinuousClock.now
        let o = try await SchedulerRun.run(vm: vm, scheduler: s, workload: w, duration: .seconds(seconds),
                                           artifactsDirectory: nil, log: .default)
        FileHandle.standardError.write(Data(
            "e2e \(name): \(o.backend.rawValue) boot \(o.bootMillis ?? -1) ms, VM \(o.wallMillis) ms, test \(ContinuousClock.now - t0), exit \(o.schedulerExit?.kind.name ?? "-"), dump \(o.failureDump == nil ? "no" : "yes")\n".utf8))
        if o.schedulerExit == nil || !o.problems.isEmpty {
            FileHandle.standardError.write(Data("e2e \(name) problems: \(o.problems)\n\(o.consoleTail.suffix(2000))\n".utf8))
        }
        return o
    }
}

/// Healthy and failing schedulers, each in a fresh VM (qemu TCG here). Serialized: VMs also
/// queue on `VMSlots`, but one at a time keeps the per-test wall times meaningful.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct SchedulerE2ETests {
    @Test(.enabled(if: E2E.missing(scheduler: "simple") == nil, Comment(rawValue: E2E.missing(scheduler: "simple") ?? "")))
    func healthySimpleRunEndsUnregistered() async throws {
        let o = try await E2E.run("simple", .simple)
        let exit = try #require(o.schedulerExit, "no scheduler exit; problems: \(o.problems)")
        #expect(exit.kind == .unreg)
        #expect(!exit.isError)
        #expect(o.failureDump == nil)
        #expect(o.workers.count == 2)
        for w in o.workers { #expect(w.cpuNanos > 0 && w.iterations > 0, "worker \(w.index) did not run") }
        #expect(o.problems.isEmpty)
        #expect(o.kernelRelease != nil && o.bootMillis != nil)
        #expect(o.machineExit == "shutdown")
    }

    @Test(.enabled(if: E2E.missing(scheduler: "fault") == nil, Comment(rawValue: E2E.missing(scheduler: "fault") ?? "")))
    func scxBPFErrorIsErrorBPF() async throws {
        let o = try await E2E.run("fault --error-after 100", .fault("--error-after", "100"))
        let exit = try #require(o.schedulerExit, "no scheduler exit; problems: \(o.problems)")
        #expect(exit.kind == .errorBPF)
        #expect(exit.kindValue == 1025)
        #expect(exit.reason == "scx_bpf_error")
        #expect(exit.message.contains("ktstr fault: error after 100 enqueues"), "message: \(exit.message)")
        // The host monitor froze the guest and read the same exit out of its memory.
        let dump = try #require(o.failureDump, "no failure dump")
        #expect(dump.kind == .errorBPF)
        #expect(dump.registers.count == 2)
    }

    @Test(.enabled(if: E2E.missing(scheduler: "fault") == nil, Comment(rawValue: E2E.missing(scheduler: "fault") ?? "")))
    func stalledTaskIsErrorStallNamingTheTask() async throws {
        let o = try await E2E.run("fault --stall-pid-every 2", .fault("--stall-pid-every", "2", "--timeout-ms", "3000"), seconds: 8)
        let exit = try #require(o.schedulerExit, "no scheduler exit; problems: \(o.problems)")
        #expect(exit.kind == .errorStall)
        // The kernel's watchdog message: "<comm>[<pid>] failed to run for <s>s".
        #expect(exit.message.contains("failed to run for"), "message: \(exit.message)")
        #expect(exit.message.range(of: #"\S+\[\d+\] failed to run"#, options: .regularExpression) != nil, "message: \(exit.message)")
        #expect(o.failureDump?.kind == .errorStall, "no failure dump of the stall")
    }

    @Test(.enabled(if: E2E.missing(scheduler: "fault") == nil, Comment(rawValue: E2E.missing(scheduler: "fault") ?? "")))
    func scxBPFExitCarriesTheCode() async throws {
        let o = try await E2E.run("fault --exit-after 50 --code 7", .fault("--exit-after", "50", "--code", "7"))
        let exit = try #require(o.schedulerExit, "no scheduler exit; problems: \(o.problems)")
        #expect(exit.kind == .unregBPF)
        #expect(exit.code == 7)
        #expect(!exit.isError)
    }

    @Test(.enabled(if: E2E.missing(scheduler: "fault") == nil, Comment(rawValue: E2E.missing(scheduler: "fault") ?? "")))
    func dispatchToABogusDSQIsARuntimeError() async throws {
        let o = try await E2E.run("fault --bogus-dsq", .fault("--bogus-dsq"))
        let exit = try #require(o.schedulerExit, "no scheduler exit; problems: \(o.problems)")
        #expect(exit.kind == .error)
        #expect(exit.isError)
        // Failing while enabling is the scheduler's result, not a problem of the run.
        #expect(o.problems.isEmpty, "\(o.problems)")
    }

    @Test(.enabled(if: E2E.missing(scheduler: "simple") == nil, Comment(rawValue: E2E.missing(scheduler: "simple") ?? "")))
    func sleepersInACgroupUnderSimple() async throws {
        // The agent reports a problem when a worker is not in the cgroup.
        let o = try await E2E.run("simple sleepers in cgroup", .simple, .sleepers(2, periodMicros: 2000, cgroup: "ktstr-e2e"), seconds: 2)
        #expect(o.schedulerExit?.kind == .unreg)
        #expect(o.problems.isEmpty, "\(o.problems)")
        #expect(o.workers.count == 2)
        for w in o.workers { #expect(w.iterations > 0 && w.runs > 0, "sleeper \(w.index) never woke") }
    }

    @Test(.enabled(if: E2E.missing(scheduler: nil) == nil, Comment(rawValue: E2E.missing(scheduler: nil) ?? "")))
    func workloadRunsWithoutAScheduler() async throws {
        let o = try await E2E.run("none pingpong", .none, .pingPong(pairs: 1), seconds: 2)
        #expect(o.schedulerExit == nil)
        #expect(o.problems.isEmpty, "\(o.problems)")
        #expect(o.workers.count == 2)
        for w in o.workers { #expect(w.iterations > 0, "ping-pong worker \(w.index) made no round trips") }
    }
}
