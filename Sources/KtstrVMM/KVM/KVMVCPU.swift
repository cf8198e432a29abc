import CKVM
import Glibc
import KtstrMachine

/// One vCPU: its fd and its mmap'd `kvm_run`. Closes/unmaps on deinit.
///
/// Threading: KVM serialises vCPU ioctls per vCPU; `run()` blocks for as long as the guest
/// runs, so other ioctls on this vCPU from another thread wait until it exits. Register
/// access is meant for the vCPU's own thread or while it is parked (frozen / not started).
public final class KVMVCPU: @unchecked Sendable {
    public let id: Int
    public let fd: Int32
    /// The shared kvm_run page(s). Valid until deinit.
    let runPointer: UnsafeMutablePointer<kvm_run>
    public let runMappingSize: Int
    /// Typed access to the kvm_run mapping (exit, I/O and MMIO data, immediate_exit).
    public var runPage: KVMRunPage { KVMRunPage(base: UnsafeMutableRawPointer(runPointer), size: runMappingSize) }
    /// Keeps the VM fd open while a vCPU exists.
    public let vm: KVMVM

    init(id: Int, fd: Int32, mmapSize: Int, vm: KVMVM) throws(KVMError) {
        guard mmapSize >= MemoryLayout<kvm_run>.size else {
            throw KVMError.invalidConfiguration("vCPU mmap size \(mmapSize) is smaller than kvm_run")
        }
        let p = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw KVMError.system(.lastError("mmap(kvm_run of vCPU \(id))")) }
        self.id = id
        self.fd = fd
        self.runMappingSize = mmapSize
        self.runPointer = p.bindMemory(to: kvm_run.self, capacity: 1)
        self.vm = vm
    }

    deinit {
        munmap(UnsafeMutableRawPointer(runPointer), runMappingSize)
        close(fd)
    }

    public enum RunResult: Sendable, Equatable {
        /// The guest exited to userspace for this reason. Port/MMIO data lives in `runPage`
        /// until the next `run()`, which completes the access.
        case exit(VCPUExit)
        /// KVM_RUN returned EINTR (signal or immediate_exit) or EAGAIN: nothing to handle.
        case interrupted
    }

    /// KVM_RUN once, decoding the exit.
    public func run() throws(KVMError) -> RunResult {
        if ckvm_run(fd) == 0 { return .exit(runPage.exit) }
        let e = errno
        if e == EINTR || e == EAGAIN { return .interrupted }
        throw KVMError.ioctl(call: "KVM_RUN", errno: e)
    }

    /// Sets kvm_run.immediate_exit (sequentially consistent; any thread).
    public func setImmediateExit(_ on: Bool) { runPage.setImmediateExit(on) }

    public func getRegs() throws(KVMError) -> kvm_regs {
        var r = kvm_regs()
        _ = try kvmCall("KVM_GET_REGS") { ckvm_get_regs(fd, &r) }
        return r
    }

    public func setRegs(_ regs: kvm_regs) throws(KVMError) {
        var r = regs
        _ = try kvmCall("KVM_SET_REGS") { ckvm_set_regs(fd, &r) }
    }

    public func getSregs() throws(KVMError) -> kvm_sregs {
        var r = kvm_sregs()
        _ = try kvmCall("KVM_GET_SREGS") { ckvm_get_sregs(fd, &r) }
        return r
    }

    public func setSregs(_ sregs: kvm_sregs) throws(KVMError) {
        var r = sregs
        _ = try kvmCall("KVM_SET_SREGS") { ckvm_set_sregs(fd, &r) }
    }

    public func getFPU() throws(KVMError) -> kvm_fpu {
        var f = kvm_fpu()
        _ = try kvmCall("KVM_GET_FPU") { ckvm_get_fpu(fd, &f) }
        return f
    }

    public func setFPU(_ fpu: kvm_fpu) throws(KVMError) {
        var f = fpu
        _ = try kvmCall("KVM_SET_FPU") { ckvm_set_fpu(fd, &f) }
    }

    /// KVM_SET_CPUID2 with `entries` (typically from `KVMSystem.supportedCPUID()`, edited).
    public func setCPUID(_ entries: [kvm_cpuid_entry2]) throws(KVMError) {
        guard let c = ckvm_cpuid2_alloc(UInt32(entries.count)) else { throw KVMError.system(.lastError("calloc(kvm_cpuid2)")) }
        defer { free(c) }
        let dst = ckvm_cpuid2_entries(c)
        for (i, e) in entries.enumerated() { dst?[i] = e }
        _ = try kvmCall("KVM_SET_CPUID2") { ckvm_set_cpuid2(fd, c) }
    }

    /// KVM_GET_MSRS for `indices`; returns index → value for the MSRs KVM could read
    /// (it stops at the first one it cannot, so the result may be shorter).
    public func getMSRs(_ indices: [UInt32]) throws(KVMError) -> [UInt32: UInt64] {
        guard !indices.isEmpty else { return [:] }
        guard let m = ckvm_msrs_alloc(UInt32(indices.count)) else { throw KVMError.system(.lastError("calloc(kvm_msrs)")) }
        defer { free(m) }
        let e = ckvm_msrs_entries(m)
        for (i, idx) in indices.enumerated() { e?[i].index = idx }
        let n = Int(try kvmCall("KVM_GET_MSRS") { ckvm_get_msrs(fd, m) })
        var out: [UInt32: UInt64] = [:]
        for i in 0..<min(n, indices.count) { if let entry = e?[i] { out[entry.index] = entry.data } }
        return out
    }

    /// KVM_SET_MSRS; throws if KVM accepted fewer than all of them (naming the first refused).
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        guard !msrs.isEmpty else { return }
        guard let m = ckvm_msrs_alloc(UInt32(msrs.count)) else { throw KVMError.system(.lastError("calloc(kvm_msrs)")) }
        defer { free(m) }
        let e = ckvm_msrs_entries(m)
        for (i, msr) in msrs.enumerated() { e?[i].index = msr.index; e?[i].data = msr.value }
        let n = Int(try kvmCall("KVM_SET_MSRS") { ckvm_set_msrs(fd, m) })
        if n < msrs.count {
            throw KVMError.invalidConfiguration("KVM_SET_MSRS refused MSR 0x\(String(msrs[n].index, radix: 16)) (set \(n) of \(msrs.count))")
        }
    }

    public func getLAPIC() throws(KVMError) -> kvm_lapic_state {
        var l = kvm_lapic_state()
        _ = try kvmCall("KVM_GET_LAPIC") { ckvm_get_lapic(fd, &l) }
        return l
    }

    public func setLAPIC(_ lapic: kvm_lapic_state) throws(KVMError) {
        var l = lapic
        _ = try kvmCall("KVM_SET_LAPIC") { ckvm_set_lapic(fd, &l) }
    }

    /// KVM_GET_MP_STATE.
    public func getMPState() throws(KVMError) -> KVMMPState {
        var s = kvm_mp_state()
        _ = try kvmCall("KVM_GET_MP_STATE") { ckvm_get_mp_state(fd, &s) }
        return KVMMPState(rawValue: s.mp_state)
    }

    public func setMPState(_ state: KVMMPState) throws(KVMError) {
        var s = kvm_mp_state(mp_state: state.rawValue)
        _ = try kvmCall("KVM_SET_MP_STATE") { ckvm_set_mp_state(fd, &s) }
    }

    /// KVM_SET_GUEST_DEBUG (see `WatchpointSet.guestDebug` for the hardware-watchpoint form).
    public func setGuestDebug(_ debug: kvm_guest_debug) throws(KVMError) {
        var d = debug
        _ = try kvmCall("KVM_SET_GUEST_DEBUG") { ckvm_set_guest_debug(fd, &d) }
    }

    public func getVCPUEvents() throws(KVMError) -> kvm_vcpu_events {
        var e = kvm_vcpu_events()
        _ = try kvmCall("KVM_GET_VCPU_EVENTS") { ckvm_get_vcpu_events(fd, &e) }
        return e
    }

    public func setVCPUEvents(_ events: kvm_vcpu_events) throws(KVMError) {
        var e = events
        _ = try kvmCall("KVM_SET_VCPU_EVENTS") { ckvm_set_vcpu_events(fd, &e) }
    }

    /// KVM_ENABLE_CAP on this vCPU.
    public func enable(_ cap: KVMCapability, flags: UInt32 = 0, args: [UInt64] = []) throws(KVMError) {
        var c = kvm_enable_cap(cap, flags: flags, args: args)
        _ = try kvmCall("KVM_ENABLE_CAP(\(cap.name))") { ckvm_enable_cap(fd, &c) }
    }
}
