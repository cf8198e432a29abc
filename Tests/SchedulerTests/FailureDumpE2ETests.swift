import Foundation
import Testing
import KtstrTesting

/// The failure dump read from the frozen guest, end to end (qemu TCG here): the monitor must
/// catch the error exit, freeze, and read exit info, registers, runqueues and BPF maps.
/// (A healthy run having no dump is checked by SchedulerE2ETests.healthySimpleRunEndsUnregistered.)
@Suite(.serialized, .timeLimit(.minutes(10)))
struct FailureDumpE2ETests {
    @Test(.enabled(if: E2E.missing(scheduler: "fault") == nil, Comment(rawValue: E2E.missing(scheduler: "fault") ?? "")))
    func scxBPFErrorDumpsTheFrozenGuest() async throws {
        let o = try await E2E.run("dump: fault --error-after 100", .fault("--error-after", "100"))
        let d = try #require(o.failureDump, "no failure dump; problems: \(o.problems)")
        FileHandle.standardError.write(Data("e2e dump timing: \(d.timing.map { "\($0)" } ?? "-")\n".utf8))
        #expect(d.kind == .errorBPF && d.kindValue == 1025)
        #expect(d.reason == "scx_bpf_error")
        #expect(d.message?.contains("ktstr fault: error after 100 enqueues") == true, "msg: \(d.message ?? "nil")")
        #expect(d.schedulerName == "ktstr_fault")
        // Backtrace of the erroring CPU, symbolized from the guest's own kallsyms tables.
        let named = d.backtrace.compactMap(\.symbol)
        #expect(named.count >= 3, "backtrace: \(d.backtrace)")
        #expect(named.contains { $0.hasPrefix("scx_bpf_error_bstr+") }, "backtrace: \(named)")
        // One register snapshot per vCPU, taken while frozen.
        #expect(d.registers.map(\.cpu) == [0, 1])
        #expect(d.registers.allSatisfy { $0.rip >= 0xFFFF_FFFF_8000_0000 || $0.rip < 0x8000_0000_0000 })
        #expect(d.cpus.count == 2)
        // The scheduler's globals, decoded by name from its .bss with the map's BTF.
        let bss = try #require(d.map(named: ".bss"), "maps: \(d.maps.map(\.name))")
        #expect(bss.type == "array")
        #expect(bss.variable("ktstr_knob_error_after")?.integer == 100)
        #expect(bss.variable("ktstr_nr_enqueued")?.integer ?? 0 >= 100)
        #expect(bss.variable("ktstr_fault_fired")?.integer == 1)
        #expect(d.map(named: ".rodata") != nil)
        #expect(d.schedulerDump?.contains("Backtrace:") == true)
        let t = try #require(d.timing)
        #expect(t.triggerToFrozenMillis < 5000 && t.frozenToReadMillis < 5000)
        #expect(d.problems.isEmpty, "\(d.problems)")
        #expect(d.text.contains("ktstr_knob_error_after = 100"))
    }

    @Test(.enabled(if: E2E.missing(scheduler: "fault") == nil, Comment(rawValue: E2E.missing(scheduler: "fault") ?? "")))
    func stallDumpNamesTheStalledTask() async throws {
        let o = try await E2E.run("dump: fault --stall-pid-every 2", .fault("--stall-pid-every", "2", "--timeout-ms", "3000"), seconds: 8)
        let d = try #require(o.failureDump, "no failure dump; problems: \(o.problems)")
        FileHandle.standardError.write(Data("e2e stall dump timing: \(d.timing.map { "\($0)" } ?? "-")\n".utf8))
        #expect(d.kind == .errorStall && d.kindValue == 1026)
        let msg = d.message ?? ""
        #expect(msg.range(of: #"\S+\[\d+\] failed to run for"#, options: .regularExpression) != nil, "msg: \(msg)")
        #expect(d.registers.count == 2)
        let bss = try #require(d.map(named: ".bss"))
        #expect(bss.variable("ktstr_knob_stall_pid_every")?.integer == 2)
        // The pid the scheduler last dropped is a task the kernel calls stalled (its pid is even).
        if let pid = bss.variable("ktstr_last_stalled_pid")?.integer { #expect(pid % 2 == 0) }
    }
}
