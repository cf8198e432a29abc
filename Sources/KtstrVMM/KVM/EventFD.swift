import CKVM
import Glibc
import KtstrMachine

/// An owned eventfd (closed on deinit): a counter the kernel can wait on. Used for the
/// freeze rendezvous and, with `KVMVM.registerIRQFD`, to inject interrupts without an ioctl.
public final class EventFD: @unchecked Sendable {
    public let fd: Int32

    /// `nonBlocking`: `read()` returns 0 instead of blocking when the counter is zero.
    public init(nonBlocking: Bool = true) throws(SystemCallError) {
        let flags = nonBlocking ? ckvm_eventfd_flags_cloexec_nonblock() : ckvm_eventfd_flags_cloexec()
        let fd = ckvm_eventfd(0, flags)
        guard fd >= 0 else { throw .lastError("eventfd") }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Adds `value` to the counter (wakes readers / fires the irqfd).
    public func signal(_ value: UInt64 = 1) {
        var v = value
        _ = Glibc.write(fd, &v, 8)
    }

    /// Reads and resets the counter; 0 when it was zero (non-blocking mode).
    public func read() -> UInt64 {
        var v: UInt64 = 0
        return Glibc.read(fd, &v, 8) == 8 ? v : 0
    }
}

extension KVMVM {
    /// KVM_IRQFD: writing to `event` raises GSI `gsi` (edge) on the in-kernel irqchip.
    public func registerIRQFD(_ event: EventFD, gsi: UInt32) throws(KVMError) {
        var f = kvm_irqfd()
        f.fd = UInt32(bitPattern: event.fd)
        f.gsi = gsi
        _ = try kvmCall("KVM_IRQFD") { ckvm_irqfd(fd, &f) }
    }

    /// KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN.
    public func unregisterIRQFD(_ event: EventFD, gsi: UInt32) throws(KVMError) {
        var f = kvm_irqfd()
        f.fd = UInt32(bitPattern: event.fd)
        f.gsi = gsi
        f.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        _ = try kvmCall("KVM_IRQFD(deassign)") { ckvm_irqfd(fd, &f) }
    }
}

extension KVMVCPU {
    /// KVM_GET_TSC_KHZ for this vCPU.
    public func tscKHz() throws(KVMError) -> Int {
        Int(try kvmCall("KVM_GET_TSC_KHZ") { ckvm_get_tsc_khz(fd) })
    }

    /// KVM_SET_TSC_KHZ for this vCPU (KVM_CAP_TSC_CONTROL).
    public func setTSCKHz(_ khz: UInt) throws(KVMError) {
        _ = try kvmCall("KVM_SET_TSC_KHZ") { ckvm_set_tsc_khz(fd, khz) }
    }

    public func getXCRs() throws(KVMError) -> kvm_xcrs {
        var x = kvm_xcrs()
        _ = try kvmCall("KVM_GET_XCRS") { ckvm_get_xcrs(fd, &x) }
        return x
    }

    public func setXCRs(_ xcrs: kvm_xcrs) throws(KVMError) {
        var x = xcrs
        _ = try kvmCall("KVM_SET_XCRS") { ckvm_set_xcrs(fd, &x) }
    }
}
