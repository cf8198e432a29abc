import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct FailureMonitorTests {
    static func fastOptions() -> FailureMonitor.Options {
        var o = FailureMonitor.Options()
        o.lateDumpTimeout = .milliseconds(200)
        o.settleTimeout = .milliseconds(100)
        // Freeze counts in these tests are about the failure; the hello-time pause has its own test.
        o.pauseGuestWhileParsing = false
        return o
    }

    /// A monitor watching a healthy synthetic guest; `fail` then changes the guest, and the
    /// monitor gets up to 10 s to produce a dump.
    static func watch(_ g: SyntheticGuest, _ m: FakeMachine, fail: () throws -> Void) throws -> FailureDump? {
        let mon = FailureMonitor(log: .silent, options: fastOptions())
        mon.start(machine: m, kallsyms: g.symbols, vmlinux: nil)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(mon.currentDump == nil)
        try fail()
        let deadline = Date().addingTimeInterval(10)
        while mon.currentDump == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        return mon.finish()
    }

    @Test func catchesAnErrorExitAndDumpsTheFrozenGuest() throws {
        let g = try SyntheticGuest(exitKind: 0)
        let m = FakeMachine(g.memory)
        let d = try #require(try Self.watch(g, m) { try g.setExitKind(1025) })
        #expect(d.kind == .errorBPF && d.kindValue == 1025)
        #expect(d.registers.count == 2)
        #expect(m.freezes.withLock { $0 } == 1 && m.thaws.withLock { $0 } == 1)
        #expect(d.message == "ktstr-fault: error after 100 enqueues")
        #expect(d.backtrace.prefix(3).map(\.symbol) == ["fn7+0x42", "fn3+0x10", "fn0+0x5"])
        // BPF program text is not in the kernel's tables: named from the bpf_kallsyms list.
        #expect(d.backtrace[3].symbol == "bpf_prog_85d36b8df8c38d15_fault_enqueue+0x234")
        #expect(d.symbolSource == "guest kallsyms tables + bpf_kallsyms (BPF programs)")
        #expect(d.map(named: "fault_bpf.bss")?.variable("nr_enqueued")?.integer == 4242)
        #expect(d.map(named: "stats")?.perCPUIntegers == [[10, 11], [20, 21]])
        #expect(d.text.contains("cpu1: 20 21"))
        #expect(d.jiffies == 2000 && d.text.contains("runnable victim0[200] waiting 1000 ticks dsq=0x4b7457"))
        #expect(d.cpus.count == 2)
        #expect(d.flags == 3 && d.flagNames == ["INITIALIZED"])
        let t = try #require(d.timing)
        #expect(t.detectedBy == "poll" && t.triggerToFrozenMillis >= 0 && t.totalMillis >= t.triggerToFrozenMillis)
        #expect(d.problems.isEmpty, "\(d.problems)")
    }

    /// 7.x's disable work stores SCX_EXIT_DONE into `exit_kind` once it starts; the kind
    /// stays in `exit_info->kind`. A stall exit's disable work often starts before the next
    /// poll: the failure must still be caught, with the recorded kind.
    @Test(arguments: [false, true])
    func anExitWhoseKindWasAlreadyResetToDoneIsStillCaught(scxRootCleared: Bool) throws {
        let g = try SyntheticGuest(exitKind: 0)
        let root = SyntheticGuest.gpa(try #require(g.symbols["scx_root"]))
        let dump = try Self.watch(g, FakeMachine(g.memory)) {
            try g.memory.write(Int32(1026), at: g.exitInfoGPA + UInt64(g.eiKindOffset))
            try g.memory.write(Int32(1), at: g.schedGPA + UInt64(g.exitKindOffset))
            // The disable work finished too: scx_root is NULL, the old scx_sched not yet freed.
            if scxRootCleared { try g.memory.write(UInt64(0), at: root) }
        }
        let d = try #require(dump, "no dump for an error_stall whose exit_kind already reads DONE")
        #expect(d.kind == .errorStall && d.kindValue == 1026)
        #expect(d.message == "ktstr-fault: error after 100 enqueues")
    }

    @Test func watchpointArmsOnExitKindAndWakesTheMonitor() throws {
        let g = try SyntheticGuest(exitKind: 0)
        let m = WatchingFakeMachine(g.memory)
        var o = Self.fastOptions()
        o.pollInterval = .seconds(30) // only the watchpoint can wake it in time
        let mon = FailureMonitor(log: .silent, options: o)
        mon.start(machine: m, kallsyms: g.symbols, vmlinux: nil)
        let deadline = Date().addingTimeInterval(10)
        while m.armed.withLock({ $0.isEmpty }), Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        let a = try #require(m.armed.withLock { $0.first })
        #expect(a.gpa == g.schedGPA + UInt64(g.exitKindOffset))
        #expect(a.kva == SyntheticGuest.dm(a.gpa))
        try g.setExitKind(1026)
        m.trigger.withLock { $0 }?(1026)
        while mon.currentDump == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        let d = try #require(mon.finish())
        #expect(d.timing?.detectedBy == "watchpoint" && d.kind == .errorStall)
    }

    /// The kernel stores kind, reason, exit_cpu one after the other; a freeze between the
    /// last two must still report exit_cpu (re-read after the thaw: write-once by then).
    @Test func exitFieldsStoredAfterTheFreezeAreReadAfterTheThaw() throws {
        let g = try SyntheticGuest(exitKind: 1025)
        let ctx = try KernelContext.resolve(memory: g.memory, symbols: g.symbols, vmlinux: nil, log: .silent)
        let cpuGPA = g.exitInfoGPA + UInt64(try ctx.btf.offset(of: "exit_cpu", in: "scx_exit_info"))
        try g.memory.write(Int32(0), at: cpuGPA) // not stored yet at the freeze
        let m = FakeMachine(g.memory)
        let mem = g.memory
        m.onThaw = { try? mem.write(Int32(1), at: cpuGPA) }
        let mon = FailureMonitor(log: .silent, options: Self.fastOptions())
        mon.start(machine: m, kallsyms: g.symbols, vmlinux: nil)
        let deadline = Date().addingTimeInterval(10)
        while mon.currentDump == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(mon.finish()?.exitCPU == 1)
    }

    /// A BTF the cache has not seen is parsed with the guest paused (no race with the
    /// scheduler); a cached one costs no pause.
    @Test func guestIsPausedWhileAnUncachedBTFIsParsed() throws {
        let g = try SyntheticGuest(exitKind: 0, uniqueBTF: true)
        let m = FakeMachine(g.memory)
        var o = Self.fastOptions()
        o.pauseGuestWhileParsing = true
        let mon = FailureMonitor(log: .silent, options: o)
        mon.start(machine: m, kallsyms: g.symbols, vmlinux: nil)
        Thread.sleep(forTimeInterval: 0.1)
        #expect(mon.finish() == nil)
        #expect(m.freezes.withLock { $0 } == 1 && m.thaws.withLock { $0 } == 1)
        let again = FakeMachine(g.memory)
        let mon2 = FailureMonitor(log: .silent, options: o)
        mon2.start(machine: again, kallsyms: g.symbols, vmlinux: nil)
        Thread.sleep(forTimeInterval: 0.1)
        #expect(mon2.finish() == nil)
        #expect(again.freezes.withLock { $0 } == 0)
    }

    @Test func healthyRunsAndCleanExitsGiveNoDump() throws {
        let g = try SyntheticGuest(exitKind: 0)
        let mon = FailureMonitor(log: .silent, options: Self.fastOptions())
        let m = FakeMachine(g.memory)
        mon.start(machine: m, kallsyms: g.symbols, vmlinux: nil)
        Thread.sleep(forTimeInterval: 0.05)
        try g.setExitKind(1) // SCX_EXIT_DONE: not a failure
        Thread.sleep(forTimeInterval: 0.05)
        try g.setExitKind(0x7FFF_0000) // garbage the kernel's enum does not name: not a failure either
        Thread.sleep(forTimeInterval: 0.05)
        #expect(mon.finish() == nil)
        #expect(m.freezes.withLock { $0 } == 0)
    }

    @Test func noSchedulerAttachedYetThenOneFails() throws {
        let g = try SyntheticGuest(exitKind: 1026)
        let root = g.symbols["scx_root"]!
        let sched = try g.memory.read(UInt64.self, at: SyntheticGuest.gpa(root))
        try g.memory.write(UInt64(0), at: SyntheticGuest.gpa(root)) // NULL until it attaches
        let mon = FailureMonitor(log: .silent, options: Self.fastOptions())
        mon.start(machine: FakeMachine(g.memory), kallsyms: g.symbols, vmlinux: nil)
        Thread.sleep(forTimeInterval: 0.05)
        #expect(mon.currentDump == nil)
        try g.memory.write(sched, at: SyntheticGuest.gpa(root))
        let deadline = Date().addingTimeInterval(10)
        while mon.currentDump == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(mon.finish()?.kind == .errorStall)
    }

    @Test func freezeFailureStillDumpsAndSaysSo() throws {
        let g = try SyntheticGuest(exitKind: 1025)
        let m = FakeMachine(g.memory)
        m.failFreeze = true
        let mon = FailureMonitor(log: .silent, options: Self.fastOptions())
        mon.start(machine: m, kallsyms: g.symbols, vmlinux: nil)
        let deadline = Date().addingTimeInterval(10)
        while mon.currentDump == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        let d = try #require(mon.finish())
        #expect(d.registers.isEmpty && d.problems.contains { $0.hasPrefix("freeze failed") })
        #expect(m.thaws.withLock { $0 } == 1) // resumed anyway: a half-done freeze must not leave the guest paused
        #expect(d.message != nil)
    }

    @Test func missingSymbolsNeverHangOrCrash() throws {
        let g = try SyntheticGuest(exitKind: 1025)
        let mon = FailureMonitor(log: .silent, options: Self.fastOptions())
        mon.start(machine: FakeMachine(g.memory), kallsyms: [:], vmlinux: nil)
        #expect(mon.finish() == nil)
        #expect(mon.setupProblem?.contains("phys_base") == true)
        let never = FailureMonitor(log: .silent)
        #expect(never.finish() == nil) // finish without start
    }
}

@Suite struct FailureDumpTests {
    static func sample() -> FailureDump {
        var d = FailureDump(kind: "error_rescue", kindValue: 1028,
                            registers: [VCPURegisterSnapshot(cpu: 0, rip: 0xFFFF_FFFF_8100_0000, rsp: 0xFFFF_C900_0001_0000, cr3: 0x1000, halted: true)],
                            problems: ["cpu 1 runqueue: address 0x0 is not mapped"])
        d.schedulerName = "fault"; d.exitCode = 0; d.exitCPU = 1; d.flags = 0
        d.reason = "rescue bandwidth overload"; d.message = "task 42 ejected"
        d.backtrace = [BacktraceFrame(address: 0xFFFF_FFFF_8123_4567, symbol: "scx_vexit+0x42"), BacktraceFrame(address: 0xFFFF_FFFF_C000_0000, symbol: nil)]
        d.schedulerDump = "fault: root\nEvent counters\n"
        d.cpus = [CPUState(cpu: 0, nrRunning: 2, scxNrRunning: 1, currentPID: 57, currentComm: "spinner")]
        d.maps = [BPFMapDump(id: 3, name: "fault_bpf.bss", type: "array", typeValue: 2, keySize: 4, valueSize: 8, maxEntries: 1, flags: 0x400,
                             contentsHex: "6400000000000000", contentsTruncated: false,
                             variables: [BPFVariable(name: "error_after", offset: 0, size: 8, value: "100", integer: 100)])]
        d.timing = DumpTiming(detectedBy: "poll", triggerToSettledMillis: 0.1, triggerToFrozenMillis: 1.5, frozenToReadMillis: 3.25, totalMillis: 40)
        d.symbolSource = "guest kallsyms tables"
        return d
    }

    @Test func jsonRoundTrip() throws {
        let d = Self.sample()
        let enc = JSONEncoder()
        enc.outputFormatting = .sortedKeys
        let data = try enc.encode(d)
        let back = try JSONDecoder().decode(FailureDump.self, from: data)
        #expect(try enc.encode(back) == data)
        #expect(back.kind == "error_rescue" && back.backtrace[0].address == "ffffffff81234567")
        #expect(back.maps[0].contents == [100, 0, 0, 0, 0, 0, 0, 0])
        #expect(back.global("error_after")?.integer == 100 && back.global("nope") == nil)
        // Old/minimal dumps decode too.
        let minimal = try JSONDecoder().decode(FailureDump.self, from: Data(#"{"kind":"error","kindValue":1024}"#.utf8))
        #expect(minimal.backtrace.isEmpty && minimal.registers.isEmpty)
    }

    @Test func textNamesEverythingADeveloperNeeds() {
        let t = Self.sample().text
        for needle in ["error_rescue (1028)", "scheduler: fault", "task 42 ejected", "#0 ffffffff81234567  scx_vexit+0x42",
                       "cpu0: rip=0xffffffff81000000", "(halted)", "curr=spinner[57]", "fault_bpf.bss array", "error_after = 100",
                       "trigger→frozen 1.50 ms", "Event counters", "not read:", "cpu 1 runqueue"] {
            #expect(t.contains(needle), "missing \(needle)")
        }
    }
}
