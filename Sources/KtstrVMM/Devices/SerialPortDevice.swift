import Synchronization
import KtstrMachine

/// A `Serial16550` on the port bus: transmitted bytes go to `sink`, the UART's interrupt
/// output drives `irq` (asserted/deasserted only when the level changes), and host input is
/// queued with `send(_:)`. The state machine sits behind a mutex: several vCPUs may touch
/// the port at once.
public final class SerialPortDevice: PortIODevice {
    private struct Locked {
        var uart = Serial16550()
        /// The level last driven onto `irq`.
        var irqLevel = false
    }

    private let state = Mutex(Locked())
    private let sink: ByteSink
    private let irq: IRQLine?

    public init(sink: @escaping ByteSink, irq: IRQLine? = nil) {
        self.sink = sink
        self.irq = irq
    }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        state.withLock { s in
            // Multi-byte accesses to a byte-wide UART: each byte reads the next register
            // (what a real bus would deliver); past the last register reads 0xff.
            for i in 0..<data.count {
                let off = UInt32(offset) + UInt32(i)
                data[i] = off < 8 ? s.uart.read(offset: UInt8(off)) : 0xff
            }
            updateIRQ(&s)
        }
    }

    public func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        var out: [UInt8] = []
        state.withLock { s in
            for i in 0..<data.count {
                let off = UInt32(offset) + UInt32(i)
                guard off < 8 else { continue }
                if let b = s.uart.write(offset: UInt8(off), value: data[i]) { out.append(b) }
            }
            updateIRQ(&s)
        }
        if !out.isEmpty { sink(out[...]) }
        return .none
    }

    /// Host → guest bytes (they show up in RBR, with a received-data interrupt if enabled).
    public func send(_ bytes: [UInt8]) {
        state.withLock { s in
            s.uart.enqueueInput(bytes)
            updateIRQ(&s)
        }
    }

    /// A copy of the current register state (for tests and diagnostics).
    public var snapshot: Serial16550 { state.withLock { $0.uart } }

    /// The UART's state for a snapshot (take it while the vCPUs are frozen).
    public func saveState() -> Serial16550.State { state.withLock { $0.uart.snapshot() } }

    /// Restores the UART (before the vCPUs run) and drives the IRQ line to match.
    public func restoreState(_ saved: Serial16550.State) {
        state.withLock { s in
            s.uart.restore(saved)
            updateIRQ(&s)
        }
    }

    /// Drives the IRQ line under the device lock so two vCPUs cannot reorder level changes.
    /// Only changes reach KVM: an edge-triggered PIC input still sees 0→1 for every
    /// re-assertion because acknowledging (IIR read, IER change) drops the level first.
    private func updateIRQ(_ s: inout Locked) {
        guard let irq else { return }
        let level = s.uart.interruptPending
        guard level != s.irqLevel else { return }
        s.irqLevel = level
        irq.set(level)
    }
}

/// The i8042 on the port bus. Register it with `DeviceBus.addI8042()` (ports 0x60 and 0x64
/// only): ports 0x61-0x63 in between are the NMI-status/speaker port and friends, which a
/// guest polls during PIT calibration and must not read as the keyboard controller.
/// Each registration is one port wide and stands for one `register` (the controller keeps
/// no state that spans the two, so each window has its own).
public final class I8042Device: PortIODevice {
    private let state = Mutex(I8042())
    public let register: I8042.Register

    public init(register: I8042.Register) { self.register = register }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        state.withLock { c in
            // Byte 0 is the register; wider reads run past the one-port window: float high.
            for i in 0..<data.count { data[i] = offset &+ UInt16(i) == 0 ? c.read(register) : 0xff }
        }
    }

    public func saveState() -> I8042.State { state.withLock { $0.snapshot() } }
    public func restoreState(_ saved: I8042.State) { state.withLock { $0.restore(saved) } }

    public func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        guard offset == 0, let first = data.first else { return .none }
        let action = state.withLock { $0.write(register, value: first) }
        switch action {
        case .none: return .none
        case .reset: return .shutdown("guest reset through the i8042 (0xFE to port 0x64)")
        }
    }
}

extension DeviceBus {
    /// The i8042 at its two ports, 0x60 (data) and 0x64 (status/command).
    public mutating func addI8042() throws(KVMError) {
        try add(I8042Device(register: .data), ports: I8042.dataPort, count: 1)
        try add(I8042Device(register: .command), ports: I8042.commandPort, count: 1)
    }
}

/// The CMOS clock on ports 0x70-0x71 (see `CMOSClock`).
public final class CMOSClockDevice: PortIODevice {
    private let state: Mutex<CMOSClock>

    public init(clock: CMOSClock = CMOSClock()) { state = Mutex(clock) }

    public func saveState() -> CMOSClock.State { state.withLock { $0.snapshot() } }
    public func restoreState(_ saved: CMOSClock.State) { state.withLock { $0.restore(saved) } }

    public func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer) {
        state.withLock { c in
            for i in 0..<data.count { data[i] = c.read(offset: offset &+ UInt16(i)) }
        }
    }

    public func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction {
        state.withLock { c in
            for i in 0..<data.count { c.write(offset: offset &+ UInt16(i), value: data[i]) }
        }
        return .none
    }
}

extension DeviceBus {
    /// The CMOS RTC at 0x70-0x71.
    public mutating func addCMOSClock(_ clock: CMOSClock = CMOSClock()) throws(KVMError) {
        try add(CMOSClockDevice(clock: clock), ports: CMOSClock.indexPort, count: 2)
    }
}
