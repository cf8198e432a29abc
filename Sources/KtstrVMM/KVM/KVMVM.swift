import CKVM
import Glibc
import KtstrMachine

/// One KVM virtual machine (a VM fd): memory slots, in-kernel irqchip/PIT, IRQ lines, vCPUs.
/// Closes the fd on deinit; keeps the `GuestMemory` it registered alive as long as it lives.
public final class KVMVM: @unchecked Sendable {
    public let fd: Int32
    public let system: KVMSystem
    /// Bytes of each vCPU's kvm_run mapping.
    public let vcpuMmapSize: Int
    private var registeredMemory: [GuestMemory] = []
    private var nextSlot: UInt32 = 0

    init(fd: Int32, system: KVMSystem) throws(KVMError) {
        self.fd = fd
        self.system = system
        self.vcpuMmapSize = try system.vcpuMmapSize()
    }

    deinit { close(fd) }

    /// KVM_CHECK_EXTENSION on the VM fd (some answers, e.g. MAX_VCPUS, are per VM).
    public func check(_ cap: KVMCapability) -> Int {
        Int(max(0, ckvm_check_extension(fd, Int(cap.rawValue))))
    }

    public func has(_ cap: KVMCapability) -> Bool { check(cap) > 0 }

    /// KVM_SET_USER_MEMORY_REGION for one slot. `host` must stay mapped while the VM lives.
    public func setUserMemoryRegion(slot: UInt32, guestPhysical: UInt64, size: UInt64,
                                    host: UnsafeMutableRawPointer, flags: UInt32 = 0) throws(KVMError) {
        var r = kvm_userspace_memory_region()
        r.slot = slot
        r.flags = flags
        r.guest_phys_addr = guestPhysical
        r.memory_size = size
        r.userspace_addr = UInt64(UInt(bitPattern: host))
        _ = try kvmCall("KVM_SET_USER_MEMORY_REGION") { ckvm_set_user_memory_region(fd, &r) }
    }

    /// Registers every region of `memory` as its own memslot (page-aligned, as KVM demands).
    public func register(memory: GuestMemory) throws(KVMError) {
        for region in memory.regions {
            let page: UInt64 = 4096
            guard region.guestPhysical % page == 0, region.size % page == 0 else {
                throw KVMError.invalidConfiguration("memory region at 0x\(String(region.guestPhysical, radix: 16)) (+0x\(String(region.size, radix: 16))) is not 4 KiB aligned")
            }
            try setUserMemoryRegion(slot: nextSlot, guestPhysical: region.guestPhysical, size: region.size, host: region.host)
            nextSlot += 1
        }
        registeredMemory.append(memory)
    }

    /// KVM_SET_TSS_ADDR: three pages KVM needs on Intel for real-mode emulation; must not
    /// overlap RAM or MMIO. The usual choice is 0xfffbd000.
    public func setTSSAddress(_ gpa: UInt64) throws(KVMError) {
        _ = try kvmCall("KVM_SET_TSS_ADDR") { ckvm_set_tss_addr(fd, UInt(gpa)) }
    }

    /// KVM_SET_IDENTITY_MAP_ADDR: one page for the EPT identity map (Intel); usually 0xfffbc000.
    public func setIdentityMapAddress(_ gpa: UInt64) throws(KVMError) {
        _ = try kvmCall("KVM_SET_IDENTITY_MAP_ADDR") { ckvm_set_identity_map_addr(fd, gpa) }
    }

    /// KVM_CREATE_IRQCHIP: in-kernel PIC + IOAPIC + per-vCPU LAPIC. Call before creating vCPUs.
    public func createIRQChip() throws(KVMError) {
        _ = try kvmCall("KVM_CREATE_IRQCHIP") { ckvm_create_irqchip(fd) }
    }

    /// KVM_CREATE_PIT2 (after the irqchip). `dummySpeaker`: KVM_PIT_SPEAKER_DUMMY, the PIT
    /// also swallows port 0x61 (the PC speaker gate) so the guest's probes stay in the kernel.
    public func createPIT2(dummySpeaker: Bool = false) throws(KVMError) {
        let flags = dummySpeaker ? UInt32(KVM_PIT_SPEAKER_DUMMY) : 0
        _ = try kvmCall("KVM_CREATE_PIT2") { ckvm_create_pit2(fd, flags) }
    }

    /// KVM_IRQ_LINE: set the level of a GSI on the in-kernel irqchip. Safe from any thread.
    public func setIRQLine(_ irq: UInt32, high: Bool) throws(KVMError) {
        _ = try kvmCall("KVM_IRQ_LINE") { ckvm_irq_line(fd, irq, high ? 1 : 0) }
    }

    /// KVM_ENABLE_CAP on the VM.
    public func enable(_ cap: KVMCapability, flags: UInt32 = 0, args: [UInt64] = []) throws(KVMError) {
        var c = kvm_enable_cap(cap, flags: flags, args: args)
        _ = try kvmCall("KVM_ENABLE_CAP(\(cap.name))") { ckvm_enable_cap(fd, &c) }
    }

    /// KVM_SET_TSC_KHZ on the VM (KVM_CAP_VM_TSC_CONTROL) — the default for vCPUs made after.
    public func setTSCKHz(_ khz: UInt) throws(KVMError) {
        _ = try kvmCall("KVM_SET_TSC_KHZ") { ckvm_set_tsc_khz(fd, khz) }
    }

    /// KVM_CREATE_VCPU with `id` (the APIC id on x86) and mmap of its kvm_run.
    public func createVCPU(id: Int) throws(KVMError) -> KVMVCPU {
        let vfd = try kvmCall("KVM_CREATE_VCPU") { ckvm_create_vcpu(fd, UInt(id)) }
        do {
            return try KVMVCPU(id: id, fd: vfd, mmapSize: vcpuMmapSize, vm: self)
        } catch {
            close(vfd)
            throw error
        }
    }
}

extension kvm_enable_cap {
    /// KVM_ENABLE_CAP's argument (VM or vCPU): at most 4 arguments, the rest dropped.
    init(_ cap: KVMCapability, flags: UInt32, args: [UInt64]) {
        self.init()
        self.cap = UInt32(cap.rawValue)
        self.flags = flags
        withUnsafeMutableBytes(of: &self.args) { buf in
            for (i, a) in args.prefix(4).enumerated() { buf.storeBytes(of: a, toByteOffset: i * 8, as: UInt64.self) }
        }
    }
}
