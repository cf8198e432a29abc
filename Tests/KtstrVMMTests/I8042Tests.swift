import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct I8042Tests {
    @Test func resetCommandOnCommandPortRequestsReset() {
        var c = I8042()
        #expect(c.write(.command, value: 0xfe) == .reset)
        #expect(c.resetRequested)
    }

    @Test func otherWritesAreIgnoredAndReadsAreZero() {
        var c = I8042()
        #expect(c.write(.data, value: 0xfe) == .none)   // 0xfe on the data port is not a reset
        #expect(c.write(.command, value: 0xaa) == .none)
        #expect(c.read(.command) == 0)
        #expect(c.read(.data) == 0)
        #expect(!c.resetRequested)
    }

    @Test func deviceTurnsResetIntoShutdown() {
        // The device decodes its register, never a port number: offset 0 of each window.
        let command = I8042Device(register: .command)
        let v: UInt8 = 0xfe
        let a = withUnsafeBytes(of: v) { command.write(offset: 0, from: $0) }
        guard case .shutdown = a else {
            Issue.record("expected shutdown, got \(a)")
            return
        }
        let data = I8042Device(register: .data)
        let b = withUnsafeBytes(of: v) { data.write(offset: 0, from: $0) }
        #expect(b == .none)
    }

    @Test func busRegistersOnlyTheTwoControllerPorts() throws {
        var bus = DeviceBus()
        try bus.addI8042()
        #expect(bus.portDevice(at: 0x60) != nil)
        #expect(bus.portDevice(at: 0x64) != nil)
        #expect(bus.portDevice(at: 0x61) == nil) // NMI status / speaker: not ours
        let v: UInt8 = 0xfe
        let (dev, off) = try #require(bus.portDevice(at: 0x64))
        let a = withUnsafeBytes(of: v) { dev.write(offset: off, from: $0) }
        let resets = if case .shutdown = a { true } else { false }
        #expect(resets, "0xFE to 0x64 must reset, got \(a)")
        let (data, doff) = try #require(bus.portDevice(at: 0x60))
        #expect(withUnsafeBytes(of: v) { data.write(offset: doff, from: $0) } == .none)
    }
}
