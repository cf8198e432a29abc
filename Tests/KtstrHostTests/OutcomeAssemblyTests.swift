import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrHost

/// `SchedulerRun.assemble`: what the agent's messages and the monitor's exit record become.
@Suite struct OutcomeAssemblyTests {
    static func outcome(_ messages: [AgentMessage], memoryExit: SchedulerExit? = nil) -> RunOutcome {
        let c = RunCollector(log: .silent) { _ in }
        let hello = AgentMessage.hello(release: "7.3.4", cpus: 2, kallsyms: [:])
        for m in [hello] + messages + [.done] { c.channelBytes(ArraySlice(Array(m.line().utf8))) }
        return SchedulerRun.assemble(collector: c, backend: .qemuTCG, started: .now, wall: .seconds(1), exit: .shutdown,
                                     dump: nil, memoryExit: memoryExit, expectScheduler: true)
    }

    @Test func memoryExitWinsAndKeepsItsCode() throws {
        let loader = SchedulerExit(kind: .unregBPF, kindValue: 65, code: nil, reason: "unregistered from BPF", message: "bye", source: .loader)
        let memory = SchedulerExit(kind: .unregBPF, kindValue: 65, code: 42, reason: "unregistered from BPF", message: "", source: .memory)
        let o = Self.outcome([.schedulerExit(loader)], memoryExit: memory)
        #expect(o.schedulerExit == SchedulerExit(kind: .unregBPF, kindValue: 65, code: 42, reason: "unregistered from BPF",
                                                 message: "bye", source: .memory))
        #expect(o.problems.isEmpty, "\(o.problems)")
        // Without memory, the loader's report stands, its unknown code null in the JSON.
        let alone = Self.outcome([.schedulerExit(loader)])
        #expect(alone.schedulerExit?.code == nil && alone.schedulerExit?.source == .loader)
        let json = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(alone)) as? [String: Any])
        let exit = try #require(json["schedulerExit"] as? [String: Any])
        #expect(exit.keys.contains("code") && exit["code"] is NSNull && exit["source"] as? String == "loader")
    }

    @Test func aSchedulerThatNeverAttachedSaysWhyFromItsLog() {
        let log = "libbpf: prog 'x_enqueue': BPF program load failed: Permission denied\nR1 type=scalar expected=fp\n\nfailed to load\n"
        let o = Self.outcome([.problem("scheduler died before attaching (exit 1)", kind: .schedulerFailedToLoad),
                              .log(stream: "scheduler", text: log)])
        #expect(o.problems.map(\.kind) == [.schedulerFailedToLoad], "\(o.problems)")
        let text = o.problems.first?.description ?? ""
        #expect(text == "the scheduler failed to load or attach: libbpf: prog 'x_enqueue': BPF program load failed: Permission denied | R1 type=scalar expected=fp | failed to load")
        #expect(!text.contains("\n"))
        // An empty log: the agent's account.
        let quiet = Self.outcome([.problem("scheduler did not attach within 100 ms (state disabled)", kind: .schedulerFailedToLoad)])
        #expect(quiet.problems.first?.detail == "scheduler did not attach within 100 ms (state disabled)")
    }

    @Test func aWorkloadCutShortIsAProblem() {
        let exit = SchedulerExit(kind: .errorBPF, kindValue: 1025, code: 0, reason: "scx_bpf_error", message: "m", source: .loader)
        let o = Self.outcome([.problem("0.45 s of the planned 3.00 s", kind: .workloadCutShort), .schedulerExit(exit)])
        #expect(o.problems.map(\.description) == ["the workload was cut short at 0.45 s of the planned 3.00 s because the scheduler exited"])
    }

    @Test func noExitInformationIsTypedAndYieldsToMemory() {
        let none = Self.outcome([.problem("no exit information from the scheduler (exit 0)", kind: .noExitInformation)])
        #expect(none.problems.map(\.kind) == [.noSchedulerExit])
        let memory = SchedulerExit(kind: .unreg, kindValue: 64, code: 0, reason: "unregistered from user space", source: .memory)
        let found = Self.outcome([.problem("no exit information from the scheduler (exit 0)", kind: .noExitInformation)], memoryExit: memory)
        #expect(found.problems.isEmpty && found.schedulerExit == memory)
    }

    @Test func aKernelWithoutSchedExtIsOneLineWithTheFix() {
        let e = SchedulerRun.RunError.kernelWithoutSchedExt(kernel: "/k/vmlinuz")
        #expect(e.description.hasPrefix("the kernel has no sched_ext (no scx_sched in its BTF) — use a kernel built with CONFIG_SCHED_CLASS_EXT"))
        #expect(!e.description.contains("\n"))
        // No scheduler, or no vmlinux to read: no verdict before the boot.
        #expect(throws: Never.self) { try SchedulerRun.requireSchedExt(vmlinux: "/nonexistent", kernel: "k", schedulerRequested: false) }
        #expect(throws: Never.self) { try SchedulerRun.requireSchedExt(vmlinux: nil, kernel: "k", schedulerRequested: true) }
    }
}
