import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

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

    @Test func busRegistersOnlyTheTwoControllerPorts() throws {
        var bus = DeviceBus()
        try bus.addI8042()
        #expect(bus.portDevice(at: 0x60) != nil)
        #expect(bus.portDevice(at: 0x64) != nil)
        #expect(bus.portDevice(at: 0x61) == nil) // NMI status / speaker: not ours
        let v: UInt8 = 0xfe
        guard let (dev, off) = bus.portDevice(at: 0x64) else { return }
        let a = withUnsafeBytes(of: v) { dev.write(offset: off, from: $0) }
        guard case .shutdown = a else { Issue.record("0xFE to 0x64 must reset, got \(a)"); return }
        guard let (data, doff) = bus.portDevice(at: 0x60) else { return }
        #expect(withUnsafeBytes(of: v) { data.write(offset: doff, from: $0) } == .none)
    }
}
