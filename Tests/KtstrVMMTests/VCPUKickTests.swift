import Glibc
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// The vCPU kick is a real-time signal, so a test process's own SIGUSR1/SIGUSR2 stay theirs.
@Suite(.enabled(if: kvmUnavailable == nil, Comment(rawValue: kvmUnavailable ?? "")),
       .timeLimit(.minutes(1)))
struct VCPUKickTests {
    /// The installed handler of `signal` as bits (0 = SIG_DFL, 1 = SIG_IGN) and its flags.
    static func disposition(_ signal: Int32) -> (handler: Int, flags: Int32) {
        var old = sigaction()
        #expect(sigaction(signal, nil, &old) == 0)
        return (unsafeBitCast(old.__sigaction_handler.sa_handler, to: Int.self), old.sa_flags)
    }

    @Test func kickIsSIGRTMINPlus3() {
        #expect(VCPUKick.signal == __libc_current_sigrtmin() + 3)
        #expect(VCPUKick.signal != SIGUSR1 && VCPUKick.signal != SIGUSR2)
        #expect(VCPUKick.signal <= __libc_current_sigrtmax())
    }

    @Test func freezingATinyGuestLeavesSIGUSR1Alone() throws {
        let before = Self.disposition(SIGUSR1)
        let m = try TinyGuestMachine(payload: TinyGuestPayloads.counterLoop, mode: .long, log: .silent)
        try m.start()
        // A freeze kicks every vCPU with the signal; thaw and freeze again to kick twice.
        _ = try m.freeze(timeout: .seconds(5))
        try m.thaw()
        _ = try m.freeze(timeout: .seconds(5))
        m.kill()
        _ = m.wait(timeout: .seconds(5))
        let after = Self.disposition(SIGUSR1)
        #expect(after.handler == before.handler, "SIGUSR1's handler changed")
        #expect(after.flags == before.flags)
        // The kick's own no-op handler is installed (a default real-time signal would kill us).
        #expect(Self.disposition(VCPUKick.signal).handler > 1)
    }
}
