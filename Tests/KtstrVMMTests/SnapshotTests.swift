import Foundation
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

/// Snapshot and restore of the own VMM with tiny guests: a frozen guest is written to a
/// directory and restored into new machines, which continue exactly where it stopped.
@Suite(.enabled(if: kvmUnavailable == nil, Comment(rawValue: kvmUnavailable ?? "")),
       .timeLimit(.minutes(2)), .serialized)
struct SnapshotTests {
    static func tempDirectory() -> String {
        let d = NSTemporaryDirectory() + "ktstr-snap-\(getpid())-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func waitFor(_ seconds: Double = 10, _ cond: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try cond() { return true }
            usleep(1000)
        }
        return try cond()
    }

    /// The serial counter (1, 2, 3... on COM1) is frozen mid-run, snapshotted, and restored
    /// twice: the first bytes each copy prints continue the sequence from the snapshot point.
    @Test(arguments: [false, true])
    func serialCounterContinuesInTwoRestoredCopies(irqchip: Bool) throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = try TinyGuestMachine(payload: TinyGuestPayloads.serialCounter, mode: .long,
                                            irqchip: irqchip, log: .silent)
        try original.start()
        #expect(Self.waitFor { original.consoleOutput.count >= 700 })
        _ = try original.freeze(timeout: .seconds(2))
        let printed = original.consoleOutput
        try original.snapshot(to: dir)
        // Nothing more arrives while frozen, so `printed` is exactly the output up to the snapshot.
        #expect(original.consoleOutput.count == printed.count)
        original.kill()
        _ = original.wait(timeout: .seconds(5))
        let (state, _) = try VMSnapshot.load(from: dir)
        let msrs = Set(state.vcpus[0].msrs.map(\.index))
        #expect(msrs.isSuperset(of: [0x10, 0xc000_0081, 0xc000_0082, 0xc000_0102, 0x277]), "saved MSRs \(msrs.sorted())")
        #expect(state.vcpus[0].xsave != nil || state.vcpus[0].fpu != nil)
        #expect((state.vcpus[0].lapic != nil) == irqchip)
        #expect((state.vm.irqchip?.count ?? 0) == (irqchip ? 3 : 0))
        #expect((state.vm.pit != nil) == irqchip)
        #expect(state.devices.com1 != nil && state.devices.cmos != nil)
        for (i, b) in printed.enumerated() { #expect(b == UInt8((i + 1) & 0xff)); if b != UInt8((i + 1) & 0xff) { break } }
        let last = printed.last ?? 0

        for copy in 0..<2 {
            let m = try TinyGuestMachine.restore(from: dir, log: .silent)
            #expect(m.irqchip == irqchip)
            #expect(m.consoleOutput.isEmpty)
            try m.start()
            let got = Self.waitFor { m.consoleOutput.count >= 600 }
            m.kill()
            _ = m.wait(timeout: .seconds(5))
            #expect(got, "copy \(copy) printed \(m.consoleOutput.count) bytes")
            let out = m.consoleOutput
            let expected = (0..<min(out.count, 600)).map { UInt8((Int(last) + 1 + $0) & 0xff) }
            #expect(Array(out.prefix(600)) == expected, "copy \(copy): first bytes \(out.prefix(8)) after \(last)")
        }
    }

    /// The memory counter continues from its saved value in both copies; RAM is a private
    /// copy-on-write mapping, so neither copy's writes reach the image or the other copy.
    @Test func memoryCounterContinuesAndTheImageStaysUnchanged() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = try TinyGuestMachine(payload: TinyGuestPayloads.counterLoop, mode: .long, log: .silent)
        try original.start()
        #expect(try Self.waitFor { try original.counter(of: 0) > 10_000 })
        _ = try original.freeze(timeout: .seconds(2))
        let saved = try original.counter(of: 0)
        try original.snapshot(to: dir)
        original.kill()
        _ = original.wait(timeout: .seconds(5))

        for _ in 0..<2 {
            let m = try TinyGuestMachine.restore(from: dir, log: .silent)
            #expect(try m.counter(of: 0) == saved)
            try m.start()
            #expect(try Self.waitFor { try m.counter(of: 0) > saved + 1000 })
            let regs = try m.freeze(timeout: .seconds(2))
            #expect(TinyGuestPayloads.counterLoopRange.contains(regs[0].rip - TinyGuestMachine.loadAddress))
            m.kill()
            _ = m.wait(timeout: .seconds(5))
        }
        let (state, ramPath) = try VMSnapshot.load(from: dir)
        let image = try VMSnapshot.mapRAM(state, ramPath: ramPath)
        #expect(try image.read(UInt64.self, at: TinyGuestMachine.dataAddress) == saved)
    }

    @Test func aCorruptOrTruncatedSnapshotIsRefusedWithATypedError() throws {
        let dir = Self.tempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let m = try TinyGuestMachine(payload: TinyGuestPayloads.counterLoop, mode: .long, log: .silent)
        try m.snapshot(to: dir) // not started: a snapshot of the initial state
        _ = try VMSnapshot.load(from: dir)
        let statePath = dir + "/" + VMSnapshot.stateFileName
        let ramPath = dir + "/" + VMSnapshot.ramFileName
        let good = try Data(contentsOf: URL(fileURLWithPath: statePath))

        // Truncated state.
        try good.prefix(good.count / 2).write(to: URL(fileURLWithPath: statePath))
        #expect { _ = try TinyGuestMachine.restore(from: dir, log: .silent) } throws: { e in
            if case VMSnapshotError.corruptState = e { return true }; return false
        }
        // Garbage in a register image: decodes, but the structure has the wrong size.
        var json = try JSONSerialization.jsonObject(with: good) as! [String: Any]
        var vcpus = json["vcpus"] as! [[String: Any]]
        vcpus[0]["regs"] = ["bytes": Data([1, 2, 3]).base64EncodedString()]
        json["vcpus"] = vcpus
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: statePath))
        #expect { _ = try TinyGuestMachine.restore(from: dir, log: .silent) } throws: { e in
            if case VMSnapshotError.incompatible = e { return true }; return false
        }
        // Another version.
        json = try JSONSerialization.jsonObject(with: good) as! [String: Any]
        json["version"] = 99
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: statePath))
        #expect(throws: VMSnapshotError.unsupportedVersion(found: 99, supported: VMSnapshotState.currentVersion)) {
            _ = try TinyGuestMachine.restore(from: dir, log: .silent)
        }
        // RAM image of the wrong size.
        try good.write(to: URL(fileURLWithPath: statePath))
        #expect(truncate(ramPath, 4096) == 0)
        #expect(throws: VMSnapshotError.ramSizeMismatch(path: ramPath, expected: TinyGuestMachine.memoryBytes, actual: 4096)) {
            _ = try TinyGuestMachine.restore(from: dir, log: .silent)
        }
        // No snapshot at all.
        #expect { _ = try TinyGuestMachine.restore(from: dir + "/missing", log: .silent) } throws: { e in
            if case VMSnapshotError.io = e { return true }; return false
        }
    }

    @Test func deviceStatesRoundTrip() throws {
        var uart = Serial16550()
        _ = uart.write(offset: Serial16550.Register.lineControl, value: 0x83)
        _ = uart.write(offset: Serial16550.Register.data, value: 0x0c)
        _ = uart.write(offset: Serial16550.Register.lineControl, value: 0x03)
        _ = uart.write(offset: Serial16550.Register.interruptEnable, value: 0x03)
        _ = uart.write(offset: Serial16550.Register.scratch, value: 0x42)
        uart.enqueueInput([1, 2, 3])
        _ = uart.read(offset: Serial16550.Register.data)
        let state = uart.snapshot()
        let decoded = try JSONDecoder().decode(Serial16550.State.self, from: JSONEncoder().encode(state))
        var copy = Serial16550()
        copy.restore(decoded)
        #expect(copy == uart || copy.snapshot() == uart.snapshot())
        #expect(copy.read(offset: Serial16550.Register.data) == 2)
        #expect(copy.divisor == 0x0c)

        var cmos = CMOSClock(now: { 0 })
        cmos.write(offset: CMOSClock.indexOffset, value: 0x20)
        cmos.write(offset: CMOSClock.dataOffset, value: 0x99)
        var cmos2 = CMOSClock(now: { 0 })
        cmos2.restore(cmos.snapshot())
        #expect(cmos2.read(offset: CMOSClock.dataOffset) == 0x99)

        var kbd = I8042()
        _ = kbd.write(.command, value: I8042.resetCommand)
        var kbd2 = I8042()
        kbd2.restore(kbd.snapshot())
        #expect(kbd2 == kbd)
    }
}
