import Testing
@testable import KtstrVMM

@Suite struct I8042Tests {
    @Test func resetCommandOnCommandPortRequestsReset() {
        var c = I8042()
        #expect(c.write(port: I8042.commandPort, value: 0xfe) == .reset)
        #expect(c.resetRequested)
    }

    @Test func otherWritesAreIgnoredAndReadsAreZero() {
        var c = I8042()
        #expect(c.write(port: I8042.dataPort, value: 0xfe) == .none)   // 0xfe on the data port is not a reset
        #expect(c.write(port: I8042.commandPort, value: 0xaa) == .none)
        #expect(c.read(port: I8042.commandPort) == 0)
        #expect(c.read(port: I8042.dataPort) == 0)
        #expect(!c.resetRequested)
    }

    @Test func deviceTurnsResetIntoShutdown() {
        let d = I8042Device()
        let v: UInt8 = 0xfe
        let a = withUnsafeBytes(of: v) { d.write(offset: 4, from: $0) }
        guard case .shutdown = a else {
            Issue.record("expected shutdown, got \(a)")
            return
        }
        let b = withUnsafeBytes(of: v) { d.write(offset: 0, from: $0) }
        #expect(b == .none)
    }
}
