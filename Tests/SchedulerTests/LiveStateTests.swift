import Foundation
import Synchronization
import KtstrTesting

// The host reads and writes the scheduler's BPF state in the running guest's RAM (issue 13):
// a `during:` closure gets a `LiveVM` once the scheduler is enabled.

/// What the `during:` closure saw, checked after the run (asserting inside it would hide
/// which run it was).
private struct Seen: Sendable {
    var knobBefore: Int64?
    var enqueuedAtWrite: Int64?
    var refusedWide: String?
    var liveHashEntries: Int?
}

@Suite(.ktstr(cpus: 2, memoryMiB: 512))
struct LiveBPFState {
    /// The fault scheduler's `ktstr_knob_error_now` is set from the host 1 s after the scheduler
    /// enabled; `error_bpf` follows that write, never precedes it. (The error ends the run at
    /// once; the long duration only leaves room for a loaded host to reach the write.)
    @Test func hostSetsTheErrorKnobMidRun() async throws {
        let seen = Mutex(Seen())
        let outcome = try await Ktstr.run(scheduler: .fault(), workload: .spinners(2), duration: .seconds(12)) { vm in
            let bss = try vm.bpf("ktstr_fa.bss")
            let before = try bss.get("ktstr_knob_error_now")
            try await vm.sleep(.seconds(1))
            // A value wider than the variable (u32) is refused, and nothing is written.
            var refused: String?
            do { try bss.set("ktstr_fault_fired", 1 << 40) } catch { refused = "\(error)" }
            let entries = try vm.bpf("ktstr_pid_enq").entries().count
            let n = try bss.get("ktstr_nr_enqueued")
            try bss.set("ktstr_knob_error_now", 1)
            seen.withLock { $0 = Seen(knobBefore: before, enqueuedAtWrite: n, refusedWide: refused, liveHashEntries: entries) }
        }
        let s = seen.withLock { $0 }
        #expect(s.knobBefore == 0)
        #expect(s.refusedWide?.contains("does not fit ktstr_fault_fired") == true, "refusal: \(s.refusedWide ?? "none")")
        #expect((s.liveHashEntries ?? 0) >= 1, "live hash entries: \(String(describing: s.liveHashEntries))")
        outcome.expectSchedulerExit(.errorBPF, messageContains: "error now")

        let writes = try #require(outcome.bpfWrites, "no writes recorded; problems: \(outcome.problems)")
        #expect(writes.count == 1)
        let w = try #require(writes.first)
        #expect(w.map == "ktstr_fa.bss" && w.target == "ktstr_knob_error_now" && w.old == "0" && w.new == "1")
        #expect((w.millisAfterEnabled ?? 0) >= 1000, "write at \(w)")
        // After, not before: on the host clock, and in the scheduler's own enqueue count.
        let exitSeen = try #require(outcome.exitSeenMillis)
        #expect(exitSeen >= w.millis, "exit seen at \(exitSeen) ms, write at \(w.millis) ms")
        let dump = try #require(outcome.failureDump, "no dump; problems: \(outcome.problems)")
        #expect(dump.global("ktstr_fault_fired")?.integer == 5)
        let firedAt = try #require(dump.global("ktstr_error_now_at")?.integer)
        let enqueuedAtWrite = try #require(s.enqueuedAtWrite)
        #expect(firedAt > enqueuedAtWrite, "fired at enqueue \(firedAt), knob written after enqueue \(enqueuedAtWrite)")
        #expect(dump.global("ktstr_knob_error_now")?.integer == 1)
        #expect(outcome.problems.map(\.kind) == [.workloadCutShort], "\(outcome.problems)")
    }

    /// The failure dump lists a hash map's entries (`ktstr_pid_enq`: pid → enqueues).
    @Test func failureDumpListsHashMapEntries() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--error-after", "100"), workload: .spinners(2))
        outcome.expectSchedulerExit(.errorBPF)
        let dump = try #require(outcome.failureDump, "no dump; problems: \(outcome.problems)")
        let map = try #require(dump.map(named: "ktstr_pid_enq"), "maps: \(dump.maps.map(\.name))")
        #expect(map.type == "hash" && map.keySize == 4 && map.valueSize == 8 && map.maxEntries == 64)
        let entries = try #require(map.entries, "problems: \(dump.problems)")
        #expect(!entries.isEmpty && entries.count <= 64)
        #expect(entries.allSatisfy { ($0.keyInteger ?? 0) > 1 && ($0.valueInteger ?? 0) >= 1 }, "\(entries)")
        let total = entries.compactMap(\.valueInteger).reduce(0, +)
        let enqueued = try #require(dump.global("ktstr_nr_enqueued")?.integer)
        #expect(total >= 1 && total <= UInt64(enqueued), "entries sum \(total), enqueued \(enqueued)")
        // Distinct keys, as a hash table has.
        #expect(Set(entries.map(\.keyHex)).count == entries.count)
        #expect(dump.text.contains("ktstr_pid_enq hash"), "\(dump.text)")
    }

    /// `.ktstr(watchdogTimeout: 2 s)` on a scheduler asking for the longest timeout (30 s):
    /// a dropped task ends it with `error_stall` after about 2 s, not 30.
    @Test(.ktstr(watchdogTimeout: .seconds(2)))
    func watchdogOverrideCatchesAStallEarly() async throws {
        let outcome = try await Ktstr.run(scheduler: .fault("--stall-pid-every", "2", "--timeout-ms", "30000"),
                                          workload: .spinners(2), duration: .seconds(20))
        outcome.expectSchedulerExit(.errorStall)
        let message = outcome.schedulerExit?.message ?? ""
        let m = try #require(message.firstMatch(of: /(\d+)\.(\d{3})s/), "message: \(message)")
        let seconds = Double(m.1)! + Double(m.2)! / 1000
        #expect(seconds >= 1.9 && seconds <= 3.5, "message: \(message)")
        let report = try #require(outcome.watchdogOverride, "problems: \(outcome.problems)")
        let hz = try #require(report.hz)
        #expect(report.jiffies == UInt64(2 * hz) && report.originalJiffies == UInt64(30 * hz), "\(report)")
        let enabled = try #require(outcome.schedulerEnabledMillis)
        let exitSeen = try #require(outcome.exitSeenMillis)
        #expect(exitSeen - enabled < 10_000, "exit seen \(exitSeen - enabled) ms after the scheduler enabled; \(report)")
        // The host's own detector (threshold: half the overridden watchdog) saw it first.
        #expect(outcome.problems.contains(.hostStallDetected), "\(outcome.problems)")
        let markers = try #require(outcome.timeline?.markers, "no timeline")
        let stallAt = try #require(markers.first { $0.kind == .hostStall }?.millis, "no host stall marker: \(markers)")
        let exitAt = try #require(markers.first { $0.kind == .schedulerExit }?.millis, "no exit marker: \(markers)")
        #expect(stallAt < exitAt, "host stall at \(stallAt) ms, exit at \(exitAt) ms")
    }
}
