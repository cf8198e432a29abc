import Foundation
import KtstrMachine

/// The MC146818 CMOS real-time clock behind ports 0x70 (index) and 0x71 (data), as a pure
/// state machine with an injected time source.
///
/// Why it exists: without it port 0x71 reads 0xff, whose bit 7 in status register A is
/// "update in progress", and Linux's `mach_get_cmos_time()` polls that bit for up to a
/// second at every boot (whenever kvmclock is not in use). Here UIP is never set, the time
/// is the host's UTC time, status D says the clock is valid, and CMOS RAM (0x0e...0x7f)
/// keeps what the guest writes. Writes to the time registers are ignored: the guest cannot
/// move the host's clock.
public struct CMOSClock: Sendable {
    /// Where a PC has it (the bus registration uses these, the device does not).
    public static let indexPort: UInt16 = 0x70
    public static let dataPort: UInt16 = 0x71
    /// Register offsets within the two-port window (rust-vmm style: the device decodes
    /// offsets, never absolute ports).
    public static let indexOffset: UInt16 = 0
    public static let dataOffset: UInt16 = 1

    enum Reg {
        static let seconds: UInt8 = 0x00, minutes: UInt8 = 0x02, hours: UInt8 = 0x04
        static let weekday: UInt8 = 0x06, day: UInt8 = 0x07, month: UInt8 = 0x08, year: UInt8 = 0x09
        static let statusA: UInt8 = 0x0a, statusB: UInt8 = 0x0b, statusC: UInt8 = 0x0c, statusD: UInt8 = 0x0d
        static let century: UInt8 = 0x32
    }
    static let statusBBinary: UInt8 = 0x04
    static let statusB24Hour: UInt8 = 0x02

    /// Seconds since 1970 (UTC) when the guest reads the clock.
    private let now: @Sendable () -> TimeInterval
    private var index: UInt8 = 0
    /// Status B: 24-hour, BCD, no interrupts (what firmware leaves behind).
    public private(set) var statusB: UInt8 = statusB24Hour
    private var ram = [UInt8](repeating: 0, count: 128)

    public init(now: @escaping @Sendable () -> TimeInterval = { Date().timeIntervalSince1970 }) {
        self.now = now
    }

    /// What the guest can change (index, status B, CMOS RAM), for snapshots. The time is
    /// the host's, never saved.
    public struct State: Codable, Sendable, Equatable {
        public var index: UInt8
        public var statusB: UInt8
        /// 128 bytes of CMOS RAM (0x00...0x0d are unused: the registers live there).
        public var ram: [UInt8]
    }

    public func snapshot() -> State { State(index: index, statusB: statusB, ram: ram) }

    /// Restores `state`; a RAM image of the wrong size is padded/truncated to 128 bytes.
    public mutating func restore(_ state: State) {
        index = state.index & 0x7f
        statusB = state.statusB
        ram = Array((state.ram + [UInt8](repeating: 0, count: 128)).prefix(128))
    }

    /// A guest read at `offset`: the data register reads the selected register; the
    /// write-only index register (and anything past the window) reads 0xff.
    public mutating func read(offset: UInt16) -> UInt8 {
        guard offset == Self.dataOffset else { return 0xff }
        return register(index)
    }

    /// A guest write of `value` at `offset`. Index bit 7 is the NMI-disable gate, not part
    /// of the register number.
    public mutating func write(offset: UInt16, value: UInt8) {
        if offset == Self.indexOffset { index = value & 0x7f; return }
        guard offset == Self.dataOffset else { return }
        switch index {
        case Reg.statusB: statusB = value // format bits (binary/BCD, 12/24 h) take effect
        case Reg.statusA, Reg.statusC, Reg.statusD: break
        case 0x0e...0x7f: ram[Int(index)] = value
        default: break // time and alarm registers: the host's clock is not the guest's to set
        }
    }

    func register(_ r: UInt8) -> UInt8 {
        switch r {
        case Reg.statusA: return 0x26          // UIP clear, 32.768 kHz base, 1024 Hz rate
        case Reg.statusB: return statusB
        case Reg.statusC: return 0              // no interrupt flags
        case Reg.statusD: return 0x80           // VRT: RAM and time are valid
        case 0x01, 0x03, 0x05: return 0         // alarms
        case Reg.seconds, Reg.minutes, Reg.hours, Reg.weekday, Reg.day, Reg.month, Reg.year, Reg.century:
            return timeField(r)
        default: return ram[Int(r & 0x7f)]
        }
    }

    private func timeField(_ r: UInt8) -> UInt8 {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC") ?? cal.timeZone
        let c = cal.dateComponents([.second, .minute, .hour, .weekday, .day, .month, .year],
                                   from: Date(timeIntervalSince1970: now()))
        let value: Int
        var pm = false
        switch r {
        case Reg.seconds: value = c.second ?? 0
        case Reg.minutes: value = c.minute ?? 0
        case Reg.hours:
            let h = c.hour ?? 0
            if statusB & Self.statusB24Hour != 0 { value = h } else { pm = h >= 12; value = h % 12 == 0 ? 12 : h % 12 }
        case Reg.weekday: value = c.weekday ?? 1         // 1 = Sunday, as the RTC counts
        case Reg.day: value = c.day ?? 1
        case Reg.month: value = c.month ?? 1
        case Reg.year: value = (c.year ?? 2000) % 100
        default: value = (c.year ?? 2000) / 100          // century
        }
        let encoded = statusB & Self.statusBBinary != 0 ? UInt8(value) : UInt8((value / 10) << 4 | value % 10)
        return pm ? encoded | 0x80 : encoded
    }
}
