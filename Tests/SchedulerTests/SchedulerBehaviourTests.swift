import KtstrTesting

// How to test a sched_ext scheduler with ktstr, one behaviour per test. Each `Ktstr.run`
// boots a fresh guest with the trait's VM shape, loads the scheduler, runs the workload and
// returns how the scheduler ended. On this machine the runs go through qemu/TCG.

/// A scheduler that works: every worker runs, and the scheduler only ends because the
/// guest agent unloaded it (`unreg`, from user space).
@Suite(.ktstr(cpus: 2, memoryMiB: 512))
struct HealthyScheduler {
    @Test func scxSimpleRunsEveryWorker() async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .spinners(4), duration: .seconds(3))
        outcome.expectNoSchedulerError()
        outcome.expectAllWorkersRan()
        #expect(outcome.schedulerExit?.kind == .unreg)
        #expect(outcome.failureDump == nil)
    }

    /// The same scheduler over different CPU topologies (LLCs × cores × threads).
    @Test(arguments: [Topology(llcs: 1, coresPerLLC: 2), Topology(llcs: 2, coresPerLLC: 1, threadsPerCore: 2)])
    func scxSimpleOnTopology(_ topology: Topology) async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .sleepers(4, periodMicros: 2000),
                                          duration: .seconds(2), topology: topology)
        outcome.expectNoSchedulerError()
        outcome.expectAllWorkersRan()
    }
}

/// Each way a scheduler can fail, provoked by ktstr's fault-injection scheduler, and the
/// exit kind the kernel records for it.
@Suite(.ktstr(cpus: 2, memoryMiB: 512))
struct SchedulerFailures {
    /// `scx_bpf_error()` from the BPF side → `error_bpf`, with the formatted message.
    @Test func bpfErrorIsReportedWithItsMessage() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--error-after", "100"), workload: .spinners(2))
        outcome.expectSchedulerExit(.errorBPF, messageContains: "error after 100 enqueues")
    }

    /// A task that is never dispatched trips the sched_ext watchdog → `error_stall`; the
    /// message names the starved task.
    @Test func stalledTaskTripsTheWatchdog() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--stall-pid-every", "2"), workload: .spinners(2),
                                          duration: .seconds(8))
        outcome.expectSchedulerExit(.errorStall, messageContains: "failed to run for")
    }

    /// `scx_bpf_exit(code)` is a clean, BPF-initiated unregistration: `unreg_bpf` with the code.
    /// (The kernel selftest `exit` checks the same kind.)
    @Test func bpfExitCarriesItsCode() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--exit-after", "50", "--code", "7"), workload: .spinners(2))
        outcome.expectSchedulerExit(.unregBPF, code: 7)
        #expect(outcome.schedulerExit?.isError == false)
    }

    /// Dispatching to a DSQ that does not exist is a runtime error (`error`), as in the kernel
    /// selftest `ddsp_bogus_dsq_fail`.
    @Test func bogusDSQIsARuntimeError() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--bogus-dsq"), workload: .spinners(2))
        outcome.expectSchedulerExit(.error)
    }
}
