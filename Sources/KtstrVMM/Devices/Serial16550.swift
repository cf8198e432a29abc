import KtstrMachine

/// A 16550A UART as a pure state machine: register reads/writes in, transmitted bytes and an
/// interrupt level out. No I/O of its own (`SerialPortDevice` wires it to a sink and an IRQ).
///
/// Enough of the chip for the Linux 8250 driver: the divisor latch behind LCR.DLAB, IER with
/// the four standard enables (the driver's probe writes 0x0f and expects exactly 0x0f back),
/// IIR with the 16550A FIFO bits (the probe enables FIFOs and reads IIR[7:6] == 0b11),
/// loopback (the probe sets MCR.LOOP|OUT2|RTS and expects MSR = DCD|CTS), and the THR-empty
/// interrupt that re-asserts after every THR write and on enabling ETBEI — the driver sends
/// userspace writes from that interrupt. The transmitter is infinitely fast: THR is always empty.
public struct Serial16550: Sendable, Equatable {
    // Register offsets from the base port.
    public enum Register {
        public static let data: UInt8 = 0          // RBR (read) / THR (write) / DLL (DLAB)
        public static let interruptEnable: UInt8 = 1 // IER / DLM (DLAB)
        public static let interruptID: UInt8 = 2   // IIR (read) / FCR (write)
        public static let lineControl: UInt8 = 3
        public static let modemControl: UInt8 = 4
        public static let lineStatus: UInt8 = 5
        public static let modemStatus: UInt8 = 6
        public static let scratch: UInt8 = 7
    }

    public static let com1Base: UInt16 = 0x3f8
    public static let com2Base: UInt16 = 0x2f8
    public static let com1IRQ: UInt32 = 4
    public static let com2IRQ: UInt32 = 3
    /// Ports a UART occupies.
    public static let portCount: UInt16 = 8
    /// Bytes of guest input buffered before the oldest are dropped (a hostile host-side
    /// producer must not grow VMM memory without bound).
    public static let inputCapacity = 4096

    // IER bits
    static let ierReceivedData: UInt8 = 0x01
    static let ierTHREmpty: UInt8 = 0x02
    static let ierLineStatus: UInt8 = 0x04
    static let ierModemStatus: UInt8 = 0x08
    static let ierMask: UInt8 = 0x0f
    // IIR values
    static let iirNone: UInt8 = 0x01
    static let iirTHREmpty: UInt8 = 0x02
    static let iirReceivedData: UInt8 = 0x04
    static let iirFIFOEnabled: UInt8 = 0xc0
    // LCR / MCR / LSR / MSR bits
    static let lcrDLAB: UInt8 = 0x80
    static let mcrDTR: UInt8 = 0x01, mcrRTS: UInt8 = 0x02, mcrOUT1: UInt8 = 0x04, mcrOUT2: UInt8 = 0x08, mcrLoop: UInt8 = 0x10
    static let lsrDataReady: UInt8 = 0x01, lsrTHREmpty: UInt8 = 0x20, lsrTransmitterEmpty: UInt8 = 0x40
    static let msrCTS: UInt8 = 0x10, msrDSR: UInt8 = 0x20, msrRI: UInt8 = 0x40, msrDCD: UInt8 = 0x80

    public private(set) var divisorLow: UInt8 = 0x01   // 115200 baud
    public private(set) var divisorHigh: UInt8 = 0
    public private(set) var interruptEnable: UInt8 = 0
    public private(set) var lineControl: UInt8 = 0x03    // 8N1
    public private(set) var modemControl: UInt8 = 0x08   // OUT2
    public private(set) var scratch: UInt8 = 0
    public private(set) var fifoEnabled = false
    /// THR-empty interrupt latched (cleared by reading IIR while it is the reported source,
    /// or by writing THR — which, the transmitter being instant, sets it again).
    public private(set) var thrEmptyPending = false
    private var input: [UInt8] = []
    private var inputHead = 0

    public init() {}

    public var dlab: Bool { lineControl & Self.lcrDLAB != 0 }
    public var loopback: Bool { modemControl & Self.mcrLoop != 0 }
    public var hasInput: Bool { inputHead < input.count }
    public var divisor: UInt16 { UInt16(divisorHigh) << 8 | UInt16(divisorLow) }

    /// The IIR value the guest would read now (without the read's side effect).
    public var interruptIdentification: UInt8 {
        let fifo = fifoEnabled ? Self.iirFIFOEnabled : 0
        if interruptEnable & Self.ierReceivedData != 0, hasInput { return fifo | Self.iirReceivedData }
        if interruptEnable & Self.ierTHREmpty != 0, thrEmptyPending { return fifo | Self.iirTHREmpty }
        return fifo | Self.iirNone
    }

    /// Level of the UART's interrupt output: true while an enabled source is pending.
    public var interruptPending: Bool { interruptIdentification & Self.iirNone == 0 }

    public var lineStatus: UInt8 {
        (hasInput ? Self.lsrDataReady : 0) | Self.lsrTHREmpty | Self.lsrTransmitterEmpty
    }

    public var modemStatus: UInt8 {
        guard loopback else { return Self.msrDCD | Self.msrDSR | Self.msrCTS }
        // Loopback wires MCR outputs back to MSR inputs: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
        var m: UInt8 = 0
        if modemControl & Self.mcrRTS != 0 { m |= Self.msrCTS }
        if modemControl & Self.mcrDTR != 0 { m |= Self.msrDSR }
        if modemControl & Self.mcrOUT1 != 0 { m |= Self.msrRI }
        if modemControl & Self.mcrOUT2 != 0 { m |= Self.msrDCD }
        return m
    }

    /// A guest read of register `offset` (0...7; anything else reads 0xff).
    public mutating func read(offset: UInt8) -> UInt8 {
        switch offset {
        case Register.data:
            if dlab { return divisorLow }
            return popInput() ?? 0
        case Register.interruptEnable:
            return dlab ? divisorHigh : interruptEnable
        case Register.interruptID:
            let iir = interruptIdentification
            // Reading IIR acknowledges a THR-empty interrupt when that is what it reports.
            if iir & 0x0f == Self.iirTHREmpty { thrEmptyPending = false }
            return iir
        case Register.lineControl: return lineControl
        case Register.modemControl: return modemControl
        case Register.lineStatus: return lineStatus
        case Register.modemStatus: return modemStatus
        case Register.scratch: return scratch
        default: return 0xff
        }
    }

    /// A guest write of `value` to register `offset`. Returns the byte put on the wire, if
    /// any (a THR write outside loopback).
    public mutating func write(offset: UInt8, value: UInt8) -> UInt8? {
        switch offset {
        case Register.data:
            if dlab { divisorLow = value; return nil }
            thrEmptyPending = true
            if loopback { appendInput(value); return nil }
            return value
        case Register.interruptEnable:
            if dlab { divisorHigh = value; return nil }
            let newly = value & Self.ierMask
            // Enabling ETBEI while THR is empty raises THRE at once (the 8250 driver's
            // UART_BUG_THRE probe and its start_tx rely on this).
            if newly & Self.ierTHREmpty != 0 { thrEmptyPending = true }
            interruptEnable = newly
        case Register.interruptID:
            // FCR: bit 0 enables FIFOs; bits 1/2 clear the receive/transmit FIFO.
            fifoEnabled = value & 0x01 != 0
            if value & 0x02 != 0 { clearInput() }
        case Register.lineControl: lineControl = value
        case Register.modemControl: modemControl = value & 0x1f
        case Register.lineStatus, Register.modemStatus: break // read-only (factory test writes ignored)
        case Register.scratch: scratch = value
        default: break
        }
        return nil
    }

    /// Bytes for the guest to read (host → guest). Drops the oldest beyond `inputCapacity`.
    public mutating func enqueueInput<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        for b in bytes { appendInput(b) }
    }

    private mutating func appendInput(_ b: UInt8) {
        if input.count - inputHead >= Self.inputCapacity { inputHead += 1 }
        input.append(b)
    }

    private mutating func popInput() -> UInt8? {
        guard inputHead < input.count else { return nil }
        let b = input[inputHead]
        inputHead += 1
        if inputHead == input.count { clearInput() } else if inputHead > 1024 {
            input.removeFirst(inputHead); inputHead = 0
        }
        return b
    }

    /// Everything the UART holds (registers and the unread receive FIFO), for snapshots.
    public struct State: Codable, Sendable, Equatable {
        public var divisorLow: UInt8, divisorHigh: UInt8, interruptEnable: UInt8
        public var lineControl: UInt8, modemControl: UInt8, scratch: UInt8
        public var fifoEnabled: Bool, thrEmptyPending: Bool
        /// Bytes received but not yet read by the guest, oldest first.
        public var input: [UInt8]
    }

    public func snapshot() -> State {
        State(divisorLow: divisorLow, divisorHigh: divisorHigh, interruptEnable: interruptEnable,
              lineControl: lineControl, modemControl: modemControl, scratch: scratch,
              fifoEnabled: fifoEnabled, thrEmptyPending: thrEmptyPending,
              input: Array(input[inputHead...]))
    }

    /// Puts the UART back into `state` (IER/MCR masked as a guest write would be; the FIFO
    /// bounded by `inputCapacity`, keeping the newest bytes).
    public mutating func restore(_ state: State) {
        divisorLow = state.divisorLow; divisorHigh = state.divisorHigh
        interruptEnable = state.interruptEnable & Self.ierMask
        lineControl = state.lineControl; modemControl = state.modemControl & 0x1f; scratch = state.scratch
        fifoEnabled = state.fifoEnabled; thrEmptyPending = state.thrEmptyPending
        input = Array(state.input.suffix(Self.inputCapacity)); inputHead = 0
    }

    private mutating func clearInput() { input.removeAll(keepingCapacity: true); inputHead = 0 }
}
