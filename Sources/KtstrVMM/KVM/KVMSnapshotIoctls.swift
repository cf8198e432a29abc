import CKVM
import Foundation
import Glibc

// The ioctls a snapshot needs beyond the run path: XSAVE, XCRS, debug registers (vCPU);
// irqchip, PIT2 and the KVM clock (VM). The structures travel as opaque byte images
// (`KVMStateBlob`): the snapshot never interprets them, KVM validates them on SET.

public typealias KVMXCRS = kvm_xcrs
public typealias KVMDebugRegisters = kvm_debugregs
public typealias KVMIRQChip = kvm_irqchip
public typealias KVMPITState = kvm_pit_state2
public typealias KVMClockData = kvm_clock_data

/// The byte image of one plain C structure from <linux/kvm.h> (Codable: base64 in JSON).
public struct KVMStateBlob: Codable, Sendable, Equatable {
    public var bytes: Data

    public init(bytes: Data) { self.bytes = bytes }

    /// The bytes of `value` (a plain C struct: no pointers, no references).
    public init<T>(of value: T) {
        bytes = withUnsafeBytes(of: value) { Data($0) }
    }

    /// The value, or nil when the image is not exactly `MemoryLayout<T>.size` bytes.
    public func value<T>(as: T.Type) -> T? {
        guard bytes.count == MemoryLayout<T>.size else { return nil }
        return withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { buf -> T in
            let raw = UnsafeMutableRawPointer(buf.baseAddress!)
            bytes.withUnsafeBytes { src in raw.copyMemory(from: src.baseAddress!, byteCount: src.count) }
            return buf.baseAddress!.pointee
        }
    }
}

/// Which in-kernel interrupt controller KVM_GET/SET_IRQCHIP addresses.
public enum KVMIRQChipID: String, Codable, Sendable, CaseIterable {
    case picMaster, picSlave, ioapic
    var raw: UInt32 {
        switch self {
        case .picMaster: ckvm_irqchip_pic_master()
        case .picSlave: ckvm_irqchip_pic_slave()
        case .ioapic: ckvm_irqchip_ioapic()
        }
    }
}

extension KVMVCPU {
    /// Bytes of the KVM_GET_XSAVE region (the legacy 4 KiB one; no AMX tile data).
    public static var xsaveSize: Int { ckvm_xsave_size() }

    /// KVM_GET_XSAVE: the FPU/SSE/AVX state as the XSAVE image.
    public func getXSAVE() throws(KVMError) -> Data {
        var d = Data(count: Self.xsaveSize)
        let rc = d.withUnsafeMutableBytes { ckvm_get_xsave(fd, $0.baseAddress) }
        if rc < 0 { throw KVMError.ioctl(call: "KVM_GET_XSAVE", errno: errno) }
        return d
    }

    public func setXSAVE(_ image: Data) throws(KVMError) {
        guard image.count == Self.xsaveSize else {
            throw KVMError.invalidConfiguration("XSAVE image of \(image.count) bytes, KVM wants \(Self.xsaveSize)")
        }
        let rc = image.withUnsafeBytes { ckvm_set_xsave(fd, $0.baseAddress) }
        if rc < 0 { throw KVMError.ioctl(call: "KVM_SET_XSAVE", errno: errno) }
    }

    public func getXCRS() throws(KVMError) -> KVMXCRS {
        var x = kvm_xcrs()
        _ = try kvmCall("KVM_GET_XCRS") { ckvm_get_xcrs(fd, &x) }
        return x
    }

    public func setXCRS(_ xcrs: KVMXCRS) throws(KVMError) {
        var x = xcrs
        _ = try kvmCall("KVM_SET_XCRS") { ckvm_set_xcrs(fd, &x) }
    }

    public func getDebugRegisters() throws(KVMError) -> KVMDebugRegisters {
        var d = kvm_debugregs()
        _ = try kvmCall("KVM_GET_DEBUGREGS") { ckvm_get_debugregs(fd, &d) }
        return d
    }

    public func setDebugRegisters(_ regs: KVMDebugRegisters) throws(KVMError) {
        var d = regs
        _ = try kvmCall("KVM_SET_DEBUGREGS") { ckvm_set_debugregs(fd, &d) }
    }
}

extension KVMVM {
    /// KVM_GET_IRQCHIP for one controller (needs KVM_CREATE_IRQCHIP first).
    public func getIRQChip(_ id: KVMIRQChipID) throws(KVMError) -> KVMIRQChip {
        var c = kvm_irqchip()
        c.chip_id = id.raw
        _ = try kvmCall("KVM_GET_IRQCHIP(\(id))") { ckvm_get_irqchip(fd, &c) }
        return c
    }

    /// KVM_SET_IRQCHIP; the image's chip_id says which controller.
    public func setIRQChip(_ chip: KVMIRQChip) throws(KVMError) {
        var c = chip
        _ = try kvmCall("KVM_SET_IRQCHIP") { ckvm_set_irqchip(fd, &c) }
    }

    public func getPIT2() throws(KVMError) -> KVMPITState {
        var p = kvm_pit_state2()
        _ = try kvmCall("KVM_GET_PIT2") { ckvm_get_pit2(fd, &p) }
        return p
    }

    public func setPIT2(_ state: KVMPITState) throws(KVMError) {
        var p = state
        _ = try kvmCall("KVM_SET_PIT2") { ckvm_set_pit2(fd, &p) }
    }

    /// KVM_GET_CLOCK: the kvmclock base (ns) the guest sees.
    public func getClock() throws(KVMError) -> KVMClockData {
        var c = kvm_clock_data()
        _ = try kvmCall("KVM_GET_CLOCK") { ckvm_get_clock(fd, &c) }
        return c
    }

    /// KVM_SET_CLOCK with only the clock value (flags cleared: the realtime/host-TSC pair of
    /// the saving host means nothing here).
    public func setClock(_ data: KVMClockData) throws(KVMError) {
        var c = kvm_clock_data()
        c.clock = data.clock
        _ = try kvmCall("KVM_SET_CLOCK") { ckvm_set_clock(fd, &c) }
    }
}
