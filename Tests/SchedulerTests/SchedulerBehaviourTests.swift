import Foundation
import KtstrTesting

// How to test a sched_ext scheduler with ktstr, one behaviour per test. Each `Ktstr.run`
// boots a fresh guest with the trait's VM shape, loads the scheduler, runs the workload and
// returns how the scheduler ended. On this machine the runs go through qemu/TCG; tests skip
// (with the reason) only when `swift run ktstr setup` has not been run.

/// A scheduler that works: every worker runs, and the scheduler only ends because the
/// guest agent unloaded it (`unreg`, from user space). No failure dump is taken.
@Suite(.ktstr(cpus: 2, memoryMiB: 512))
struct HealthyScheduler {
    @Test func scxSimpleRunsEveryWorker() async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .spinners(4), duration: .seconds(3))
        outcome.expectNoSchedulerError()
        outcome.expectAllWorkersRan()
        #expect(outcome.schedulerExit?.kind == .unreg)
        #expect(outcome.workers.count == 4)
        #expect(outcome.failureDump == nil)
        #expect(outcome.problems.isEmpty, "\(outcome.problems)")
        #expect(outcome.kernelRelease?.hasPrefix("7.") == true && outcome.bootMillis != nil)
        #expect(outcome.machineExit == .shutdown)
    }

    /// The host samples the guest's runqueues from its RAM while the scheduler runs, cheaply:
    /// at least 20 samples per CPU over a 3 s run, for at most 5% of the run's wall time.
    /// scx_simple's shared DSQ (id 0) and the kernel's event counters are in the samples;
    /// a healthy run has no host stall.
    @Test func liveTimelineIsSampledCheaply() async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .spinners(2), duration: .seconds(3))
        outcome.expectNoSchedulerError()
        let timeline = try #require(outcome.timeline, "no timeline; problems: \(outcome.problems)")
        let full = try #require(outcome.fullTimeline)
        #expect(timeline.problems == nil, "\(timeline.problems ?? [])")
        #expect(full.samples.allSatisfy { $0.cpus.count == 2 }, "CPUs per sample: \(Set(full.samples.map(\.cpus.count)))")
        #expect(full.samples.count >= 20, "\(full.samples.count) samples per CPU in \(outcome.wallMillis) ms")
        let cost = try #require(outcome.samplerCostFraction)
        #expect(cost <= 0.05, "sampling took \(timeline.samplingMillis) ms of \(outcome.wallMillis) ms")
        // While the scheduler ran: the spinners show up as current tasks, the clocks advance.
        #expect(full.samples.contains { $0.cpus.contains { $0.currentComm?.hasPrefix("ktstr-spinn") == true } })
        #expect(full.samples.contains { $0.dsqDepths?["0"] != nil }, "no sample shows scx_simple's DSQ 0")
        #expect(full.samples.contains { ($0.events?.count ?? 0) > 0 && $0.events?["SCX_EV_SELECT_CPU_FALLBACK"] != nil })
        let kinds = full.markers.map(\.kind)
        #expect(kinds.contains(.schedulerEnabled) && kinds.contains(.schedulerExit) && !kinds.contains(.hostStall), "\(full.markers)")
        #expect(full.markers.first { $0.kind == .schedulerExit }?.label == "unreg", "\(full.markers)")
        #expect(!outcome.problems.contains(.hostStallDetected), "\(outcome.problems)")
        print("sampler: \(full.samples.count) samples × 2 CPUs, \(timeline.samplingMillis) ms of reads in \(outcome.wallMillis) ms "
              + "(\(cost * 100)%), \(timeline.samplingMillis / Double(max(1, full.samples.count))) ms per sample")
    }

    /// The same scheduler over different CPU topologies (LLCs × cores × threads).
    @Test(arguments: [Topology(llcs: 1, coresPerLLC: 2), Topology(llcs: 2, coresPerLLC: 1, threadsPerCore: 2)])
    func scxSimpleOnTopology(_ topology: Topology) async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .sleepers(4, periodMicros: 2000),
                                          duration: .seconds(2), topology: topology)
        outcome.expectNoSchedulerError()
        outcome.expectAllWorkersRan()
        #expect(Set(outcome.workers.compactMap(\.lastCPU)).isSubset(of: Set(0..<topology.vcpuCount)))
    }

    /// Workers placed in a cgroup (the agent checks the placement and reports a problem if
    /// a worker is not there), sleeping and waking under scx_simple.
    @Test func sleepersInACgroup() async throws {
        let outcome = try await Ktstr.run(scheduler: .simple, workload: .sleepers(2, periodMicros: 2000, cgroup: "ktstr-doc"),
                                          duration: .seconds(2))
        #expect(outcome.schedulerExit?.kind == .unreg)
        #expect(outcome.problems.isEmpty, "\(outcome.problems)")
        for w in outcome.workers { #expect(w.iterations > 0 && w.runs > 0, "sleeper \(w.index) never woke") }
    }

    /// The workload alone, under the kernel's default scheduler: the baseline to compare with.
    @Test func pingPongWithoutAScheduler() async throws {
        let outcome = try await Ktstr.run(scheduler: .none, workload: .pingPong(pairs: 1), duration: .seconds(2))
        #expect(outcome.schedulerExit == nil)
        #expect(outcome.problems.isEmpty, "\(outcome.problems)")
        #expect(outcome.workers.count == 2)
        for w in outcome.workers { #expect(w.iterations > 0, "ping-pong worker \(w.index) made no round trips") }
    }
}

/// Each way a scheduler can fail, provoked by ktstr's fault-injection scheduler: the exit
/// kind the kernel records, and the failure dump the host reads out of the frozen guest.
@Suite(.ktstr(cpus: 2, memoryMiB: 512))
struct SchedulerFailures {
    /// `scx_bpf_error()` from the BPF side → `error_bpf`, with the formatted message; the
    /// dump has the symbolized backtrace, one register set per vCPU, and the scheduler's
    /// globals decoded by name from its .bss.
    @Test func bpfErrorIsReportedAndDumped() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--error-after", "100"), workload: .spinners(2))
        outcome.expectSchedulerExit(.errorBPF, messageContains: "ktstr fault: error after 100 enqueues")
        #expect(outcome.schedulerExit?.reason == "scx_bpf_error")

        let dump = try #require(outcome.failureDump, "no failure dump; problems: \(outcome.problems)")
        #expect(dump.kind == .errorBPF && dump.kindValue == 1025)
        #expect(dump.message?.contains("error after 100 enqueues") == true)
        #expect(dump.schedulerName == "ktstr_fault")
        let frames = dump.backtrace.compactMap(\.symbol)
        #expect(frames.count >= 3, "backtrace: \(dump.backtrace)")
        #expect(frames.contains { $0.hasPrefix("scx_bpf_error_bstr+") }, "backtrace: \(frames)")
        #expect(dump.registers.map(\.cpu) == [0, 1])
        #expect(dump.cpus.count == 2)
        let bss = try #require(dump.map(named: ".bss"), "maps: \(dump.maps.map(\.name))")
        #expect(bss.variable("ktstr_knob_error_after")?.integer == 100)
        #expect(bss.variable("ktstr_nr_enqueued")?.integer ?? 0 >= 100)
        #expect(dump.map(named: ".rodata") != nil)
        #expect(dump.schedulerDump?.contains("Backtrace:") == true)
        let timing = try #require(dump.timing)
        #expect(timing.triggerToFrozenMillis < 5000 && timing.frozenToReadMillis < 5000)
        #expect(dump.problems.isEmpty, "\(dump.problems)")
        #expect(dump.text.contains("ktstr_knob_error_after = 100"))
    }

    /// A task that is never dispatched trips the sched_ext watchdog → `error_stall`; the
    /// message names the starved task, and the dump finds it on a runnable list.
    @Test func stalledTaskTripsTheWatchdog() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--stall-pid-every", "2", "--timeout-ms", "3000"),
                                          workload: .spinners(2), duration: .seconds(8))
        outcome.expectSchedulerExit(.errorStall, messageContains: "failed to run for")
        let message = outcome.schedulerExit?.message ?? ""
        #expect(message.range(of: #"\S+\[\d+\] failed to run"#, options: .regularExpression) != nil, "message: \(message)")

        let dump = try #require(outcome.failureDump, "no failure dump; problems: \(outcome.problems)")
        #expect(dump.kind == .errorStall && dump.kindValue == 1026)
        #expect(dump.registers.count == 2)
        let victim = try #require((dump.message ?? "").firstMatch(of: /(\S+)\[(\d+)\] failed to run/), "message: \(dump.message ?? "nil")")
        let pid = try #require(Int32(victim.2))
        // The kernel's own dump, written when the watchdog fired, lists the victim as runnable.
        #expect(dump.schedulerDump?.contains("R \(victim.1)[\(pid)]") == true, "kernel dump: \(dump.schedulerDump ?? "nil")")
        // Our runqueue read at the freeze sees it too: still waiting, or running once the
        // kernel's disable work (which may start before a 5 ms poll) has moved it back to CFS.
        let seen = dump.cpus.contains { cpu in cpu.currentPID == pid || (cpu.runnable ?? []).contains { $0.pid == pid } }
        #expect(seen, "cpus: \(dump.cpus)")
        #expect(dump.global("ktstr_knob_stall_pid_every")?.integer == 2)
        // The fault scheduler starves every second pid: one worker made (almost) no progress.
        // Its wait includes the wait in progress (run_delay alone grows only once it runs
        // again): at least most of the 3 s watchdog timeout.
        let starved = try #require(outcome.workers.min { $0.iterations < $1.iterations }, "no workers: \(outcome.problems)")
        #expect(starved.waitNanos >= 2_000_000_000, "starved worker: \(starved)")
        #expect(outcome.problems.map(\.kind).filter { $0 != .hostStallDetected } == [.workloadCutShort], "\(outcome.problems)")

        // The host's sampler saw the stall (the victim waited past 2 s; the watchdog's
        // timeout is 3 s) before the kernel's exit: one problem naming the victim, and a
        // host_stall marker ahead of the scheduler_exit marker.
        let stalls = outcome.problems.filter { $0.kind == .hostStallDetected }
        #expect(stalls.contains { $0.detail?.contains("\(victim.1)[\(pid)] runnable for") == true }, "\(stalls)")
        #expect(stalls.allSatisfy { $0.detail?.contains("before the scheduler's exit was seen") == true }, "\(stalls)")
        let markers = try #require(outcome.timeline?.markers, "no timeline")
        let stallAt = try #require(markers.first { $0.kind == .hostStall }, "markers: \(markers)").millis
        let exitAt = try #require(markers.first { $0.kind == .schedulerExit }, "markers: \(markers)").millis
        #expect(stallAt < exitAt, "host stall at +\(stallAt) ms, scheduler exit seen at +\(exitAt) ms")
        print("host stall seen at +\(stallAt) ms, scheduler exit at +\(exitAt) ms: \(stalls.map(\.description))")
    }

    /// `scx_bpf_exit(code)` is a clean, BPF-initiated unregistration: `unreg_bpf` with the
    /// code, and no dump. (The kernel selftest `exit` checks the same kind and code.)
    @Test func bpfExitCarriesItsCode() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--exit-after", "50", "--code", "7"), workload: .spinners(2))
        outcome.expectSchedulerExit(.unregBPF, code: 7)
        #expect(outcome.schedulerExit?.isError == false)
        #expect(outcome.failureDump == nil)
        #expect(outcome.schedulerExit?.source == .memory, "exit read from \(String(describing: outcome.schedulerExit?.source))")
    }

    /// A scheduler that is not ours (its loader reports through the kernel's
    /// user_exit_info.h, which prints no code) exits with `scx_bpf_exit(42, "bye")`: the code
    /// comes from the kernel's exit record in guest memory. The workload stopped early, and
    /// the outcome says so.
    @Test func foreignSchedulersExitCodeComesFromGuestMemory() async throws {
        let outcome = try await Ktstr.run(scheduler: try fixtureScheduler("scx_bye", "-n", "50", "-c", "42"),
                                          workload: .spinners(2), duration: .seconds(5))
        outcome.expectSchedulerExit(.unregBPF, messageContains: "bye", code: 42)
        let exit = try #require(outcome.schedulerExit)
        #expect(exit.kind == .unregBPF && exit.code == 42 && exit.message == "bye" && exit.source == .memory, "\(exit)")
        #expect(outcome.failureDump == nil)
        // The loader printed only "EXIT: unregistered from BPF (bye)": no code in the log.
        #expect(outcome.schedulerLog?.contains("EXIT: unregistered from BPF (bye)") == true, "log: \(outcome.schedulerLog ?? "nil")")
        #expect(outcome.problems.map(\.kind) == [.workloadCutShort], "\(outcome.problems)")
    }

    /// Dispatching to a DSQ that does not exist is a kernel-side runtime error (`error`), as
    /// in the kernel selftests `ddsp_bogus_dsq_fail` and `select_cpu_dispatch_bad_dsq`.
    /// `--bogus-after 50` lets the scheduler run first, so the error hits a running guest.
    @Test func bogusDSQIsARuntimeError() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--bogus-dsq", "--bogus-after", "50"), workload: .spinners(2))
        outcome.expectSchedulerExit(.error)
        #expect(outcome.problems.map(\.kind) == [.workloadCutShort], "\(outcome.problems)")
        let dump = try #require(outcome.failureDump, "no failure dump; problems: \(outcome.problems)")
        #expect(dump.kind == .error && dump.reason == "runtime error")
        // The kernel names the DSQ it could not find (0x4b7457, the fault scheduler's bogus id).
        #expect(dump.message?.lowercased().contains("4b7457") == true, "message: \(dump.message ?? "nil")")
        #expect(dump.backtrace.compactMap(\.symbol).count >= 3, "backtrace: \(dump.backtrace)")
        #expect(dump.global("ktstr_knob_bogus_dsq")?.integer == 1)
    }

    /// A scheduler that fails while being enabled still reports its exit: a result, not a
    /// problem of the run.
    @Test func failingWhileEnablingIsAResult() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--bogus-dsq"), workload: .spinners(2))
        outcome.expectSchedulerExit(.error)
        // Nothing went wrong around the run. Whether the workload had started before the exit
        // depends on timing; if it had, the outcome says it was cut short, and that is true.
        #expect(Set(outcome.problems.map(\.kind)).isSubset(of: [.workloadCutShort]), "\(outcome.problems)")
    }
}

/// A test scheduler under Tests/SchedulerTests/Fixtures/<name>, built (and cached) against the
/// guest kernel like any downstream scheduler.
func fixtureScheduler(_ name: String, _ args: String...) throws -> SchedulerSpec {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)").path
    return .binary(path: try Provisioning.buildScheduler(sourceDirectory: dir), args: args)
}
