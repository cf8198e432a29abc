import Testing
@testable import KtstrGuest

@Suite struct AgentParsingTests {
    @Test func ktstrExitLineWins() throws {
        let log = """
            EXIT: scx_bpf_error (ktstr_fault.bpf.c:76: ktstr fault: error after 100 enqueues) on CPU 0
            KTSTR_EXIT kind=1025 code=0 reason=scx_bpf_error  msg=ktstr_fault.bpf.c:76: ktstr fault: error after 100 enqueues
            """
        let e = try #require(ExitInfo.fromKtstrLine(log))
        #expect(e.kind == "error_bpf" && e.kindValue == 1025 && e.code == 0)
        #expect(e.reason == "scx_bpf_error")
        #expect(e.message == "ktstr_fault.bpf.c:76: ktstr fault: error after 100 enqueues")
        let exit = try #require(ExitInfo.fromKtstrLine("KTSTR_EXIT kind=65 code=7 reason=unregistered from BPF  msg=bye"))
        #expect(exit.kind == "unreg_bpf" && exit.code == 7 && exit.reason == "unregistered from BPF" && exit.message == "bye")
        #expect(ExitInfo.fromKtstrLine("KTSTR_EXIT kind=x code=1") == nil)
        #expect(ExitInfo.fromKtstrLine("") == nil)
    }

    @Test func ueiLineGivesReasonMessageAndKind() throws {
        let e = try #require(ExitInfo.fromUEILine("local=3 global=9\nEXIT: runnable task stall (scheduler[100] failed to run for 4.388s) on CPU 1\n"))
        #expect(e.kind == "error_stall" && e.kindValue == 1026)
        #expect(e.reason == "runnable task stall")
        #expect(e.message == "scheduler[100] failed to run for 4.388s")
        let plain = try #require(ExitInfo.fromUEILine("EXIT: unregistered from user space"))
        #expect(plain.kind == "unreg" && plain.message.isEmpty)
        // UEI_REPORT prints no exit code: unknown, not 0.
        #expect(plain.code == nil && plain.source == .loader)
        // A message that itself contains parentheses stays whole.
        let nested = try #require(ExitInfo.fromUEILine("EXIT: scx_bpf_error (f(x) failed (code 3))"))
        #expect(nested.reason == "scx_bpf_error" && nested.message == "f(x) failed (code 3)")
        #expect(ExitInfo.fromUEILine("no exit here") == nil)
    }

    @Test func kernelLogIsTheLastResort() throws {
        let lines = ["sched_ext: BPF scheduler \"simple\" enabled",
                     "sched_ext: BPF scheduler \"ktstr_fault\" disabled (runtime error)",
                     "sched_ext: ktstr_fault: invalid DSQ ID 0x1234"]
        let e = try #require(ExitInfo.fromKernelLog(lines))
        #expect(e.kind == "error" && e.kindValue == 1024 && e.message == "invalid DSQ ID 0x1234" && e.source == .kernelLog && e.code == nil)
        let unknown = try #require(ExitInfo.fromKernelLog(["sched_ext: BPF scheduler \"x\" disabled (something new)"]))
        #expect(unknown.kind == "unknown" && unknown.kindValue == nil)
        #expect(ExitInfo.fromKernelLog(["sched_ext: BPF scheduler \"x"]) == nil)
    }

    @Test func kallsymsLineMatching() {
        let text = "ffffffff83d5f4e0 B scx_root\nffffffff83d5f4e8 b scx_root_x\nffffffffc0001000 t scx_root\t[mod]\n"
        let b = Array(text.utf8)
        var found: [Int: String] = [:]
        var start = 0
        for (i, c) in b.enumerated() where c == 0x0A {
            Kallsyms.match(b, start, i, [Array("scx_root".utf8)], &found)
            start = i + 1
        }
        #expect(found == [0: "ffffffff83d5f4e0"])
    }
}
