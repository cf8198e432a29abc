import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrFixtures

/// The exit record of every exit kind, read from guest memory (not only errors), and the
/// before-boot sched_ext check.
@Suite struct ExitRecordTests {
    /// Watches `g`, applies `exit`, and waits (≤ 10 s) for the monitor's exit record.
    static func watchExit(_ g: SyntheticGuest, _ m: FakeMachine, exit: () throws -> Void) throws -> (SchedulerExit?, FailureDump?) {
        let mon = FailureMonitor(log: .silent, options: FailureMonitorTests.fastOptions())
        mon.start(machine: m, kallsyms: g.symbols, vmlinux: nil)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(mon.schedulerExit == nil, "no exit yet")
        try exit()
        let deadline = Date().addingTimeInterval(10)
        while mon.schedulerExit == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        let dump = mon.finish()
        return (mon.schedulerExit, dump)
    }

    /// scx_bpf_exit(code, msg): a clean kind, so no freeze and no dump, but the code, reason
    /// and message come from `exit_info` (the loader's `EXIT:` line has no code).
    @Test(arguments: [false, true])
    func aCleanExitIsReadWithItsCodeAndNoFreeze(disableWorkStarted: Bool) throws {
        let g = try SyntheticGuest(exitKind: 0)
        let m = FakeMachine(g.memory)
        let (exit, dump) = try Self.watchExit(g, m) {
            try g.memory.write(Int64(42), at: g.exitInfoGPA + UInt64(try g.btf.offset(of: "exit_code", in: "scx_exit_info")))
            // 7.x: exit_info->kind holds the kind; exit_kind already reads DONE once the disable work ran.
            try g.memory.write(Int32(65), at: g.exitInfoGPA + UInt64(g.eiKindOffset))
            try g.memory.write(Int32(disableWorkStarted ? 1 : 65), at: g.schedGPA + UInt64(g.exitKindOffset))
        }
        let e = try #require(exit, "no exit record for unreg_bpf")
        #expect(e.kind == .unregBPF && e.kindValue == 65 && e.code == 42 && e.source == .memory)
        #expect(e.message == "ktstr-fault: error after 100 enqueues" && !e.isError)
        #expect(dump == nil)
        #expect(m.freezes.withLock { $0 } == 0)
    }

    /// Not settled yet (exit_info->kind not stored): no record, rather than a half-read one.
    @Test func anUnsettledExitIsNotRecorded() throws {
        let g = try SyntheticGuest(exitKind: 0)
        let m = FakeMachine(g.memory)
        let mon = FailureMonitor(log: .silent, options: FailureMonitorTests.fastOptions())
        mon.start(machine: m, kallsyms: g.symbols, vmlinux: nil)
        try g.memory.write(Int32(65), at: g.schedGPA + UInt64(g.exitKindOffset)) // exit_info->kind still 0
        Thread.sleep(forTimeInterval: 0.3)
        _ = mon.finish()
        #expect(mon.schedulerExit == nil)
    }

    /// An error exit's record comes from the dump, code included.
    @Test func anErrorExitRecordMatchesItsDump() throws {
        let g = try SyntheticGuest(exitKind: 0)
        let (exit, dump) = try Self.watchExit(g, FakeMachine(g.memory)) { try g.setExitKind(1025) }
        let d = try #require(dump)
        let e = try #require(exit)
        #expect(e.kind == .errorBPF && e.kindValue == 1025 && e.code == -7 && e.code == d.exitCode)
        #expect(e.message == d.message && e.source == .memory && e.isError)
    }

    @Test func schedExtIsDecidedFromBTF() throws {
        var without = BTFBuilder()
        let int = without.int("int", size: 4, signed: true)
        _ = without.structure("task_struct", size: 4, members: [("pid", int, 0)])
        #expect(SchedExtSupport.present(in: try BTF(bytes: without.blob())) == false)
        var with = without
        _ = with.structure("scx_sched", size: 4, members: [("exit_kind", int, 0)])
        #expect(SchedExtSupport.present(in: try BTF(bytes: with.blob())) == true)
        #expect(SchedExtSupport.present(in: try SyntheticGuest(exitKind: 0).btf))
    }
}
