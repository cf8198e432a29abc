import CKVM
import KtstrMachine

/// A vCPU's shared `kvm_run` mapping, typed: the exit it describes, the data buffers of
/// port and MMIO exits (which the VMM fills for reads; KVM completes the instruction on the
/// next KVM_RUN), and immediate_exit. The Run layer sees only this and `VCPUExit`.
///
/// Every number in the page comes from KVM but describes what the guest did, so the buffer
/// accessors check it against the mapping before handing out memory.
public struct KVMRunPage: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    /// Length of the mapping (kvm_run plus the PIO data page(s)).
    public let size: Int

    /// `base` must point at `size` bytes laid out as KVM's vCPU mapping (tests pass a fake).
    public init(base: UnsafeMutableRawPointer, size: Int) {
        self.base = base
        self.size = size
    }

    var run: UnsafeMutablePointer<kvm_run> { base.assumingMemoryBound(to: kvm_run.self) }

    /// The exit KVM_RUN just returned with.
    public var exit: VCPUExit { VCPUExit.decode(run) }

    /// The `count * size` bytes of a port I/O exit (read: fill them; write: the guest's data),
    /// or nil when they would lie outside the mapping. Overflow-safe.
    public func ioData(_ io: VCPUExit.PortIO) -> UnsafeMutableRawBufferPointer? {
        guard io.size > 0, io.count >= 0, io.dataOffset <= UInt64(size),
              io.count <= (size - Int(io.dataOffset)) / io.size else { return nil }
        return UnsafeMutableRawBufferPointer(start: base + Int(io.dataOffset), count: io.count * io.size)
    }

    /// The data bytes of an MMIO exit (kvm_run.mmio.data, 8 bytes), or nil for a length
    /// outside 1...8.
    public func mmioData(_ m: VCPUExit.MMIO) -> UnsafeMutableRawBufferPointer? {
        guard (1...8).contains(m.length), let data = ckvm_run_mmio_data(run) else { return nil }
        return UnsafeMutableRawBufferPointer(start: data, count: m.length)
    }

    /// Sets kvm_run.immediate_exit (sequentially consistent; any thread): the next KVM_RUN
    /// completes a pending access and returns EINTR without running guest code.
    public func setImmediateExit(_ on: Bool) { ckvm_run_set_immediate_exit(run, on ? 1 : 0) }
}
