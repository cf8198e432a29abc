import KtstrMachine

/// What a device access asks of the VMM beyond returning data.
public enum DeviceAction: Sendable, Equatable {
    case none
    /// The guest asked the machine to power off or reset (i8042 0xFE, ...): stop every vCPU.
    case shutdown(String)
}

/// A device on the x86 port-I/O bus. Called from vCPU threads (any of them, concurrently):
/// implementations serialise their own state. `offset` is relative to the registered base;
/// `data.count` is the access size (1, 2 or 4).
public protocol PortIODevice: AnyObject, Sendable {
    func read(offset: UInt16, into data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt16, from data: UnsafeRawBufferPointer) -> DeviceAction
}

/// A device on the memory bus (MMIO). `data.count` is 1...8.
public protocol MMIODevice: AnyObject, Sendable {
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt64, from data: UnsafeRawBufferPointer) -> DeviceAction
}

/// A level-triggered interrupt output wired to a GSI of the in-kernel irqchip (or to nothing).
public struct IRQLine: Sendable {
    public let gsi: UInt32
    private let setLevel: @Sendable (Bool) -> Void

    public init(gsi: UInt32, setLevel: @escaping @Sendable (Bool) -> Void) {
        self.gsi = gsi
        self.setLevel = setLevel
    }

    public func set(_ high: Bool) { setLevel(high) }

    /// Drives `gsi` through KVM_IRQ_LINE; failures go to `log` (a lost interrupt must not
    /// kill the vCPU thread that caused it).
    public static func kvm(_ vm: KVMVM, gsi: UInt32, log: Log = .default) -> IRQLine {
        IRQLine(gsi: gsi) { high in
            do { try vm.setIRQLine(gsi, high: high) } catch { log.warning("IRQ \(gsi): \(error)") }
        }
    }
}

/// Port and MMIO ranges → devices. Built before the vCPUs start, read-only afterwards
/// (so lookups from vCPU threads need no lock).
public struct DeviceBus: Sendable {
    public struct PortRange: Sendable {
        public let base: UInt16
        public let count: UInt16
        public let device: any PortIODevice
        public var end: UInt32 { UInt32(base) + UInt32(count) }
    }

    public struct MMIORange: Sendable {
        public let base: UInt64
        public let size: UInt64
        public let device: any MMIODevice
    }

    public private(set) var ports: [PortRange] = []
    public private(set) var mmio: [MMIORange] = []

    public init() {}

    /// Adds `device` at ports [base, base+count). Throws on overlap or wrap.
    public mutating func add(_ device: any PortIODevice, ports base: UInt16, count: UInt16) throws(KVMError) {
        let new = PortRange(base: base, count: count, device: device)
        guard count > 0, new.end <= 0x1_0000 else {
            throw KVMError.invalidConfiguration("port range 0x\(String(base, radix: 16))+\(count) is empty or past 0xffff")
        }
        if let clash = ports.first(where: { UInt32($0.base) < new.end && UInt32(base) < $0.end }) {
            throw KVMError.invalidConfiguration("ports 0x\(String(base, radix: 16))+\(count) overlap 0x\(String(clash.base, radix: 16))+\(clash.count)")
        }
        ports.append(new)
        ports.sort { $0.base < $1.base }
    }

    /// Adds `device` at guest-physical [base, base+size). Throws on overlap or wrap.
    public mutating func add(_ device: any MMIODevice, mmio base: UInt64, size: UInt64) throws(KVMError) {
        guard size > 0, base <= UInt64.max - (size - 1) else {
            throw KVMError.invalidConfiguration("MMIO range 0x\(String(base, radix: 16))+0x\(String(size, radix: 16)) is empty or wraps")
        }
        let last = base + (size - 1)
        if let clash = mmio.first(where: { $0.base <= last && base <= $0.base + ($0.size - 1) }) {
            throw KVMError.invalidConfiguration("MMIO 0x\(String(base, radix: 16))+0x\(String(size, radix: 16)) overlaps 0x\(String(clash.base, radix: 16))")
        }
        mmio.append(MMIORange(base: base, size: size, device: device))
        mmio.sort { $0.base < $1.base }
    }

    /// The device owning `port` and the offset into it.
    public func portDevice(at port: UInt16) -> (device: any PortIODevice, offset: UInt16)? {
        for r in ports where port >= r.base && UInt32(port) < r.end {
            return (r.device, port - r.base)
        }
        return nil
    }

    /// The device owning `[address, address+length)` entirely, and the offset into it.
    /// An access straddling a device's end is not the device's (it reads as unmapped).
    public func mmioDevice(at address: UInt64, length: Int) -> (device: any MMIODevice, offset: UInt64)? {
        for r in mmio where address >= r.base && address - r.base < r.size {
            let off = address - r.base
            guard UInt64(length) <= r.size - off else { return nil }
            return (r.device, off)
        }
        return nil
    }
}
