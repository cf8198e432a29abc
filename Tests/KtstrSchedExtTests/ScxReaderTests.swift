import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrSchedExt
@testable import KtstrProtocol
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct ScxReaderTests {
    static func context(_ g: SyntheticGuest) throws -> KernelContext {
        try KernelContext.resolve(memory: g.memory, symbols: g.symbols, vmlinux: nil, log: .silent)
    }

    @Test func contextComesFromGuestMemory() throws {
        let g = try SyntheticGuest()
        let ctx = try Self.context(g)
        #expect(ctx.btfSource.contains("guest memory"))
        #expect(ctx.space.physBase == 0 && ctx.space.pageOffsetBase == SyntheticGuest.pob)
        #expect(ctx.space.walker?.levels == 4)
        #expect(ctx.layout.kindName(1028) == "error_rescue") // named by the guest's BTF, not our table
        #expect(ctx.layout.kindName(1026) == .errorStall)
    }

    @Test func contextFailuresAreTypedAndTheVmlinuxIsTheFallback() throws {
        let g = try SyntheticGuest()
        var noPhys = g.symbols; noPhys["phys_base"] = nil
        #expect(throws: MonitorError.self) { try KernelContext.resolve(memory: g.memory, symbols: noPhys, vmlinux: nil, log: .silent) }
        // Break the guest's BTF magic: without a vmlinux there is no BTF at all...
        let btfGPA = SyntheticGuest.gpa(g.symbols["__start_BTF"]!)
        try g.memory.write(UInt16(0x1234), at: btfGPA)
        var noBTFSym = g.symbols; noBTFSym["__start_BTF"] = nil // (phys_base validation uses it)
        let r = Result { () throws(MonitorError) in try KernelContext.resolve(memory: g.memory, symbols: noBTFSym, vmlinux: nil, log: .silent) }
        if case let .failure(e) = r { #expect(e.description.contains("no kernel BTF")) } else { Issue.record("resolved without any BTF") }
        // ...and with the real vmlinux, its .BTF is used instead.
        if FileManager.default.fileExists(atPath: BTFTests.vmlinux) {
            let ctx = try KernelContext.resolve(memory: g.memory, symbols: noBTFSym, vmlinux: BTFTests.vmlinux, log: .silent)
            #expect(ctx.btfSource.contains("vmlinux"))
        }
    }

    @Test func exitInfoIsReadThroughBTFOffsets() throws {
        let g = try SyntheticGuest(exitKind: 1025)
        let ctx = try Self.context(g)
        let r = ScxReader(space: ctx.space, layout: ctx.layout, symbols: ctx.symbols)
        let sched = try #require(try r.schedPointer())
        #expect(try r.exitKind(sched: sched) == 1025)
        var d = FailureDump(kind: .errorBPF, kindValue: 1025)
        let bt = r.readExitInfo(sched: sched, into: &d)
        #expect(d.problems.isEmpty)
        #expect(d.schedulerName == "fault")
        #expect(d.exitCode == -7 && d.exitCPU == 1 && d.flags == 3)
        #expect(d.reason == "scx_bpf_error")
        #expect(d.message == "ktstr-fault: error after 100 enqueues")
        #expect(bt.count == 4 && d.backtrace.count == 4)
        #expect(d.schedulerDump?.contains("Event counters") == true)
        r.readCPUs(count: 2, into: &d)
        var cpu0 = CPUState(cpu: 0, nrRunning: 3, scxNrRunning: 2, currentPID: 100, currentComm: "spinner0",
                            localDSQDepth: 1, scxFlags: 0, rqClock: 5_000_000, scxClock: 0)
        cpu0.runnable = [RunnableTask(pid: 200, comm: "victim0", runnableAt: 1000, dsqID: 0x4B_7457),
                         RunnableTask(pid: 201, comm: "victim1", runnableAt: 1500)]
        var cpu1 = CPUState(cpu: 1, nrRunning: 4, scxNrRunning: 3, currentPID: 101, currentComm: "spinner1",
                            localDSQDepth: 1, scxFlags: 0, rqClock: 5_000_001, scxClock: 0)
        cpu1.runnable = []
        #expect(d.cpus == [cpu0, cpu1])
        #expect(d.problems.isEmpty, "\(d.problems)")
    }

    @Test func mapsAreWalkedAndGlobalsDecoded() throws {
        let g = try SyntheticGuest(exitKind: 1025)
        let ctx = try Self.context(g)
        var d = FailureDump(kind: .errorBPF, kindValue: 1025)
        BPFMapReader(space: ctx.space, layout: try #require(ctx.layout.maps), perCPUOffsets: g.symbols["__per_cpu_offset"], cpuCount: 2)
            .readAll(idr: g.symbols["map_idr"]!, into: &d)
        #expect(d.problems.isEmpty)
        #expect(d.maps.map(\.name) == ["task_ctx", "fault_bpf.bss", "stats"])
        let stats = try #require(d.map(named: "stats"))
        #expect(stats.type == "percpu_array" && stats.perCPUIntegers == [[10, 11], [20, 21]])
        let hash = try #require(d.map(named: "task_ctx"))
        #expect(hash.type == "hash" && hash.id == 7 && hash.maxEntries == 1024 && hash.contentsHex == nil)
        let bss = try #require(d.map(named: ".bss"))
        #expect(bss.type == "array" && bss.valueSize == 16 && bss.contents?.count == 16)
        #expect(bss.variable("nr_enqueued")?.integer == 4242)
        #expect(bss.variable("error_after")?.integer == -100)   // signed, through a volatile
        #expect(bss.variable("stall")?.value == "1")
        #expect(bss.variable("tag")?.value == "\"ok\"") // char arrays as text
    }

    @Test func corruptPointersBecomeProblemsNotCrashes() throws {
        let g = try SyntheticGuest(exitKind: 1025)
        let ctx = try Self.context(g)
        let r = ScxReader(space: ctx.space, layout: ctx.layout, symbols: ctx.symbols)
        let sched = try #require(try r.schedPointer())
        // msg → non-canonical; bt_len → huge; exit_info → out of RAM.
        try g.memory.write(UInt64(0x1234_5678_9ABC_DEF0), at: g.exitInfoGPA + UInt64(g.eiMsgOffset))
        try g.memory.write(UInt32(0xFFFF_FFFF), at: g.exitInfoGPA + UInt64(g.eiBTLenOffset))
        var d = FailureDump(kind: .errorBPF, kindValue: 1025)
        r.readExitInfo(sched: sched, into: &d)
        #expect(d.message == nil)
        #expect(d.problems.contains { $0.hasPrefix("exit_info.msg") })
        #expect(d.problems.contains { $0.contains("bt_len") })
        #expect(d.backtrace.count <= ScxReader.maxBacktrace)
        let eiField = try ctx.btf.offset(of: "exit_info", in: "scx_sched")
        try g.memory.write(SyntheticGuest.pob + (1 << 40), at: g.schedGPA + UInt64(eiField))
        var d2 = FailureDump(kind: .errorBPF, kindValue: 1025)
        r.readExitInfo(sched: sched, into: &d2)
        #expect(d2.problems.count >= 1 && d2.message == nil)
        // An xa_node whose slots all point back at itself: bounded walk, no hang.
        let node: UInt64 = 0x12_0000
        let slots = UInt64(try ctx.btf.offset(of: "slots", in: "xa_node"))
        for i in 0..<64 { try g.memory.write(SyntheticGuest.dm(node) | 2, at: node + slots + UInt64(i * 8)) }
        var d3 = FailureDump(kind: .errorBPF, kindValue: 1025)
        BPFMapReader(space: ctx.space, layout: try #require(ctx.layout.maps)).readAll(idr: g.symbols["map_idr"]!, into: &d3)
        #expect(d3.maps.isEmpty)
        // A bpf_kallsyms node linked to itself: the walk stops at its bound.
        let lnode = UInt64(try ctx.btf.offset(of: "lnode", in: "bpf_ksym"))
        try g.memory.write(SyntheticGuest.dm(0x12_5000 + lnode), at: 0x12_5000 + lnode)
        let bpf = try #require(BPFKallsyms(head: g.symbols["bpf_kallsyms"], btf: ctx.btf, space: ctx.space))
        #expect(bpf.symbols.count == BPFKallsyms.maxEntries)
    }

    @Test func randomGarbageNeverCrashes() throws {
        let g = try SyntheticGuest(exitKind: 1025)
        let ctx = try Self.context(g)
        var rng = SystemRandomNumberGenerator()
        // Scribble random words over the exit info, runqueues and map structures, then read.
        for round in 0..<50 {
            for gpa in stride(from: UInt64(0x10_0000), to: 0x13_3000, by: 8) where UInt64.random(in: 0..<4, using: &rng) == 0 {
                let v: UInt64 = round % 2 == 0 ? UInt64.random(in: 0...UInt64.max, using: &rng)
                    : SyntheticGuest.pob + UInt64.random(in: 0..<(SyntheticGuest.ram * 2), using: &rng)
                try g.memory.write(v, at: gpa)
            }
            let r = ScxReader(space: ctx.space, layout: ctx.layout, symbols: ctx.symbols)
            var d = FailureDump(kind: .error, kindValue: 1024)
            if let s = try? r.schedPointer() {
                r.readExitInfo(sched: s, into: &d)
                r.readCPUs(count: 2, into: &d)
            }
            BPFMapReader(space: ctx.space, layout: try #require(ctx.layout.maps)).readAll(idr: g.symbols["map_idr"]!, into: &d)
            #expect((d.schedulerDump?.utf8.count ?? 0) <= ScxReader.maxDump)
            #expect(d.maps.allSatisfy { ($0.contents?.count ?? 0) <= BPFMapReader.maxContents })
        }
    }
}
