import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct CMOSClockTests {
    /// 2026-12-01 13:07:29 UTC, a Tuesday.
    static let when: Double = 1_796_130_449

    func read(_ c: inout CMOSClock, _ reg: UInt8) -> UInt8 {
        c.write(offset: CMOSClock.indexOffset, value: reg)
        return c.read(offset: CMOSClock.dataOffset)
    }

    @Test func timeIsBCDIn24HourModeByDefault() {
        var c = CMOSClock(now: { Self.when })
        #expect(read(&c, 0x00) == 0x29)
        #expect(read(&c, 0x02) == 0x07)
        #expect(read(&c, 0x04) == 0x13)
        #expect(read(&c, 0x06) == 3)     // Sunday = 1
        #expect(read(&c, 0x07) == 0x01)
        #expect(read(&c, 0x08) == 0x12)
        #expect(read(&c, 0x09) == 0x26)
        #expect(read(&c, 0x32) == 0x20)
    }

    @Test func statusSaysValidAndNeverUpdating() {
        var c = CMOSClock(now: { Self.when })
        #expect(read(&c, 0x0a) & 0x80 == 0)   // UIP clear: Linux does not poll for a second
        #expect(read(&c, 0x0d) == 0x80)
        #expect(read(&c, 0x0c) == 0)
    }

    @Test func binaryAnd12HourFormatsFollowStatusB() {
        var c = CMOSClock(now: { Self.when })
        c.write(offset: CMOSClock.indexOffset, value: 0x0b)
        c.write(offset: CMOSClock.dataOffset, value: 0x04)          // binary, 12-hour
        #expect(read(&c, 0x00) == 29)
        #expect(read(&c, 0x04) == 0x80 | 1)                     // 1 PM
        #expect(read(&c, 0x09) == 26)
    }

    @Test func ramKeepsWritesAndTimeIgnoresThem() {
        var c = CMOSClock(now: { Self.when })
        c.write(offset: CMOSClock.indexOffset, value: 0x80 | 0x40)  // NMI-disable bit is not part of the index
        c.write(offset: CMOSClock.dataOffset, value: 0x5a)
        #expect(read(&c, 0x40) == 0x5a)
        c.write(offset: CMOSClock.indexOffset, value: 0x00)
        c.write(offset: CMOSClock.dataOffset, value: 0x59)
        #expect(read(&c, 0x00) == 0x29)
        #expect(c.read(offset: CMOSClock.indexOffset) == 0xff)
    }
}
