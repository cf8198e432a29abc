import Synchronization
import Testing
@testable import KtstrMachine
@testable import KtstrVMM
@testable import KtstrFixtures

@Suite struct Serial16550Tests {
    typealias R = Serial16550.Register

    @Test func thrWriteTransmitsAndLSRSaysEmpty() {
        var u = Serial16550()
        #expect(u.write(offset: R.data, value: 0x41) == 0x41)
        #expect(u.read(offset: R.lineStatus) & 0x60 == 0x60) // THRE | TEMT
        #expect(u.read(offset: R.lineStatus) & 0x01 == 0)    // no data ready
    }

    @Test func divisorLatchHidesDataAndIERWhileDLABIsSet() {
        var u = Serial16550()
        _ = u.write(offset: R.interruptEnable, value: 0x05)
        _ = u.write(offset: R.lineControl, value: 0x83)
        #expect(u.write(offset: R.data, value: 0x0c) == nil)  // DLL, not a transmitted byte
        _ = u.write(offset: R.interruptEnable, value: 0x00)  // DLM
        #expect(u.divisor == 0x000c)
        #expect(u.read(offset: R.data) == 0x0c)
        #expect(u.read(offset: R.interruptEnable) == 0x00)
        _ = u.write(offset: R.lineControl, value: 0x03)
        #expect(u.read(offset: R.interruptEnable) == 0x05)   // IER untouched by DLM writes
    }

    @Test func linuxAutoconfigProbeSeesA16550A() {
        var u = Serial16550()
        // IER test: 0 reads back 0, 0x0f reads back 0x0f (upper bits never stick).
        _ = u.write(offset: R.interruptEnable, value: 0)
        #expect(u.read(offset: R.interruptEnable) & 0x0f == 0)
        _ = u.write(offset: R.interruptEnable, value: 0xff)
        #expect(u.read(offset: R.interruptEnable) == 0x0f)
        _ = u.write(offset: R.interruptEnable, value: 0)
        // Loopback test: LOOP|OUT2|RTS → MSR status bits == DCD|CTS.
        _ = u.write(offset: R.modemControl, value: 0x10 | 0x08 | 0x02)
        #expect(u.read(offset: R.modemStatus) & 0xf0 == 0x90)
        _ = u.write(offset: R.modemControl, value: 0x08)
        // FIFO test: enabling FIFOs makes IIR[7:6] == 0b11 (16550A); no EFR behind LCR=0xBF.
        _ = u.write(offset: R.interruptID, value: 0x01)
        #expect(u.read(offset: R.interruptID) & 0xc0 == 0xc0)
        _ = u.write(offset: R.lineControl, value: 0xbf)
        #expect(u.read(offset: R.interruptID) != 0)
        _ = u.write(offset: R.lineControl, value: 0x03)
        #expect(u.read(offset: R.interruptID) & 0x20 == 0)  // not a 64-byte-FIFO 16750
        // LSR safety check: the driver gives up on a port reading 0xff.
        #expect(u.read(offset: R.lineStatus) != 0xff)
        _ = u.write(offset: R.scratch, value: 0x5a)
        #expect(u.read(offset: R.scratch) == 0x5a)
    }

    @Test func thrEmptyInterruptFollowsEnableAckAndWrites() {
        var u = Serial16550()
        #expect(!u.interruptPending)
        _ = u.write(offset: R.interruptEnable, value: 0x02)     // ETBEI with THR empty → THRE now
        #expect(u.interruptPending)
        #expect(u.read(offset: R.interruptID) & 0x0f == 0x02)  // reading IIR acknowledges it
        #expect(!u.interruptPending)
        #expect(u.read(offset: R.interruptID) & 0x0f == 0x01)
        _ = u.write(offset: R.data, value: 0x41)                // THR write: empty again at once
        #expect(u.interruptPending)
        _ = u.write(offset: R.interruptEnable, value: 0x00)     // masked: line drops
        #expect(!u.interruptPending)
    }

    @Test func inputRaisesDataReadyAndReceiveInterrupt() {
        var u = Serial16550()
        u.enqueueInput([0x31, 0x32])
        #expect(u.read(offset: R.lineStatus) & 0x01 == 0x01)
        #expect(!u.interruptPending)                            // not enabled yet
        _ = u.write(offset: R.interruptEnable, value: 0x01)
        #expect(u.read(offset: R.interruptID) & 0x0f == 0x04)
        #expect(u.read(offset: R.data) == 0x31)
        #expect(u.read(offset: R.data) == 0x32)
        #expect(u.read(offset: R.lineStatus) & 0x01 == 0)
        #expect(!u.interruptPending)
        #expect(u.read(offset: R.data) == 0)                    // empty RBR reads 0
    }

    @Test func receivedDataOutranksTHREmpty() {
        var u = Serial16550()
        _ = u.write(offset: R.interruptEnable, value: 0x03)
        u.enqueueInput([0x7a])
        #expect(u.read(offset: R.interruptID) & 0x0f == 0x04)
        _ = u.read(offset: R.data)
        #expect(u.read(offset: R.interruptID) & 0x0f == 0x02)   // THRE still latched
    }

    @Test func loopbackRoutesTransmitToReceive() {
        var u = Serial16550()
        _ = u.write(offset: R.modemControl, value: 0x10)
        #expect(u.write(offset: R.data, value: 0x55) == nil)
        #expect(u.read(offset: R.data) == 0x55)
    }

    @Test func fifoResetDropsInputAndInputIsBounded() {
        var u = Serial16550()
        u.enqueueInput([UInt8](repeating: 1, count: Serial16550.inputCapacity + 10))
        var n = 0
        while u.read(offset: R.lineStatus) & 1 == 1 { _ = u.read(offset: R.data); n += 1 }
        #expect(n == Serial16550.inputCapacity)
        u.enqueueInput([1, 2, 3])
        _ = u.write(offset: R.interruptID, value: 0x03)          // enable + clear RX FIFO
        #expect(u.read(offset: R.lineStatus) & 1 == 0)
    }

    @Test func outOfRangeOffsetsAreHarmless() {
        var u = Serial16550()
        #expect(u.read(offset: 8) == 0xff)
        #expect(u.write(offset: 200, value: 1) == nil)
        #expect(u == Serial16550())
    }

    @Test func deviceDrivesIRQOnlyOnLevelChangesAndSendsBytesToSink() {
        let levels = Mutex<[Bool]>([])
        let out = ByteCollector()
        let dev = SerialPortDevice(sink: out.sink, irq: IRQLine(gsi: 4) { high in levels.withLock { $0.append(high) } })
        func w(_ off: UInt16, _ v: UInt8) { withUnsafeBytes(of: v) { _ = dev.write(offset: off, from: $0) } }
        func r(_ off: UInt16) -> UInt8 {
            var v: UInt8 = 0
            withUnsafeMutableBytes(of: &v) { dev.read(offset: off, into: $0) }
            return v
        }
        w(1, 0x02)               // ETBEI: assert
        #expect(r(2) & 0x0f == 2) // ack: deassert
        w(0, 0x68)               // 'h': assert again (an edge for the PIC)
        w(0, 0x69)               // 'i': level unchanged, no call
        #expect(r(2) & 0x0f == 2)
        w(1, 0)
        #expect(levels.withLock { $0 } == [true, false, true, false])
        #expect(out.text == "hi")
        dev.send([0x0a])
        #expect(r(5) & 1 == 1)
        #expect(r(0) == 0x0a)
    }
}
