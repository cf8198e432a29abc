// CKVM: <linux/kvm.h> for Swift. Static inline wrappers only; no logic lives here.
// Owner: KVM core. Swift cannot call the variadic ioctl(2) nor import _IOR/_IOW macros,
// so every request used by KtstrVMM gets a small typed function here. Each returns what
// ioctl(2) returns (-1 with errno set on failure); the Swift side turns that into a typed error.
#ifndef CKVM_H
#define CKVM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <linux/kvm.h>

// MARK: - System (/dev/kvm) ioctls

static inline int ckvm_get_api_version(int kvm) { return ioctl(kvm, KVM_GET_API_VERSION, 0); }
static inline int ckvm_create_vm(int kvm, unsigned long type) { return ioctl(kvm, KVM_CREATE_VM, type); }
static inline int ckvm_check_extension(int fd, long cap) { return ioctl(fd, KVM_CHECK_EXTENSION, cap); }
static inline int ckvm_get_vcpu_mmap_size(int kvm) { return ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0); }
static inline int ckvm_get_supported_cpuid(int kvm, struct kvm_cpuid2 *c) { return ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c); }
static inline int ckvm_get_msr_index_list(int kvm, struct kvm_msr_list *l) { return ioctl(kvm, KVM_GET_MSR_INDEX_LIST, l); }

// MARK: - VM ioctls

static inline int ckvm_set_user_memory_region(int vm, const struct kvm_userspace_memory_region *r) {
    return ioctl(vm, KVM_SET_USER_MEMORY_REGION, r);
}
static inline int ckvm_set_tss_addr(int vm, unsigned long addr) { return ioctl(vm, KVM_SET_TSS_ADDR, addr); }
static inline int ckvm_set_identity_map_addr(int vm, uint64_t addr) { return ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &addr); }
static inline int ckvm_create_irqchip(int vm) { return ioctl(vm, KVM_CREATE_IRQCHIP, 0); }
static inline int ckvm_create_pit2(int vm, uint32_t flags) {
    struct kvm_pit_config c;
    memset(&c, 0, sizeof c);
    c.flags = flags;
    return ioctl(vm, KVM_CREATE_PIT2, &c);
}
static inline int ckvm_irq_line(int vm, uint32_t irq, uint32_t level) {
    struct kvm_irq_level l;
    memset(&l, 0, sizeof l);
    l.irq = irq;
    l.level = level;
    return ioctl(vm, KVM_IRQ_LINE, &l);
}
static inline int ckvm_irqfd(int vm, const struct kvm_irqfd *f) { return ioctl(vm, KVM_IRQFD, f); }
static inline int ckvm_set_gsi_routing(int vm, const struct kvm_irq_routing *r) { return ioctl(vm, KVM_SET_GSI_ROUTING, r); }
static inline int ckvm_set_tsc_khz(int fd, unsigned long khz) { return ioctl(fd, KVM_SET_TSC_KHZ, khz); }
static inline int ckvm_get_tsc_khz(int fd) { return ioctl(fd, KVM_GET_TSC_KHZ, 0); }
static inline int ckvm_create_vcpu(int vm, unsigned long id) { return ioctl(vm, KVM_CREATE_VCPU, id); }
// KVM_ENABLE_CAP works on VM and vCPU fds alike.
static inline int ckvm_enable_cap(int fd, const struct kvm_enable_cap *c) { return ioctl(fd, KVM_ENABLE_CAP, c); }

// MARK: - vCPU ioctls

static inline int ckvm_run(int vcpu) { return ioctl(vcpu, KVM_RUN, 0); }
static inline int ckvm_get_regs(int vcpu, struct kvm_regs *r) { return ioctl(vcpu, KVM_GET_REGS, r); }
static inline int ckvm_set_regs(int vcpu, const struct kvm_regs *r) { return ioctl(vcpu, KVM_SET_REGS, r); }
static inline int ckvm_get_sregs(int vcpu, struct kvm_sregs *r) { return ioctl(vcpu, KVM_GET_SREGS, r); }
static inline int ckvm_set_sregs(int vcpu, const struct kvm_sregs *r) { return ioctl(vcpu, KVM_SET_SREGS, r); }
static inline int ckvm_get_fpu(int vcpu, struct kvm_fpu *f) { return ioctl(vcpu, KVM_GET_FPU, f); }
static inline int ckvm_set_fpu(int vcpu, const struct kvm_fpu *f) { return ioctl(vcpu, KVM_SET_FPU, f); }
static inline int ckvm_set_cpuid2(int vcpu, const struct kvm_cpuid2 *c) { return ioctl(vcpu, KVM_SET_CPUID2, c); }
static inline int ckvm_get_msrs(int vcpu, struct kvm_msrs *m) { return ioctl(vcpu, KVM_GET_MSRS, m); }
static inline int ckvm_set_msrs(int vcpu, const struct kvm_msrs *m) { return ioctl(vcpu, KVM_SET_MSRS, m); }
static inline int ckvm_get_lapic(int vcpu, struct kvm_lapic_state *l) { return ioctl(vcpu, KVM_GET_LAPIC, l); }
static inline int ckvm_set_lapic(int vcpu, const struct kvm_lapic_state *l) { return ioctl(vcpu, KVM_SET_LAPIC, l); }
static inline int ckvm_get_mp_state(int vcpu, struct kvm_mp_state *s) { return ioctl(vcpu, KVM_GET_MP_STATE, s); }
static inline int ckvm_set_mp_state(int vcpu, const struct kvm_mp_state *s) { return ioctl(vcpu, KVM_SET_MP_STATE, s); }
static inline int ckvm_set_guest_debug(int vcpu, const struct kvm_guest_debug *d) { return ioctl(vcpu, KVM_SET_GUEST_DEBUG, d); }
static inline int ckvm_get_vcpu_events(int vcpu, struct kvm_vcpu_events *e) { return ioctl(vcpu, KVM_GET_VCPU_EVENTS, e); }
static inline int ckvm_set_vcpu_events(int vcpu, const struct kvm_vcpu_events *e) { return ioctl(vcpu, KVM_SET_VCPU_EVENTS, e); }
static inline int ckvm_get_xcrs(int vcpu, struct kvm_xcrs *x) { return ioctl(vcpu, KVM_GET_XCRS, x); }
static inline int ckvm_set_xcrs(int vcpu, const struct kvm_xcrs *x) { return ioctl(vcpu, KVM_SET_XCRS, x); }

// Snapshot / restore. kvm_xsave ends in a flexible array: the buffer is passed untyped and
// must hold ckvm_xsave_size() bytes (the legacy 4 KiB KVM_GET_XSAVE region).
static inline size_t ckvm_xsave_size(void) { return sizeof(struct kvm_xsave); }
static inline int ckvm_get_xsave(int vcpu, void *x) { return ioctl(vcpu, KVM_GET_XSAVE, x); }
static inline int ckvm_set_xsave(int vcpu, const void *x) { return ioctl(vcpu, KVM_SET_XSAVE, x); }
static inline int ckvm_get_debugregs(int vcpu, struct kvm_debugregs *d) { return ioctl(vcpu, KVM_GET_DEBUGREGS, d); }
static inline int ckvm_set_debugregs(int vcpu, const struct kvm_debugregs *d) { return ioctl(vcpu, KVM_SET_DEBUGREGS, d); }
static inline int ckvm_get_irqchip(int vm, struct kvm_irqchip *c) { return ioctl(vm, KVM_GET_IRQCHIP, c); }
static inline int ckvm_set_irqchip(int vm, const struct kvm_irqchip *c) { return ioctl(vm, KVM_SET_IRQCHIP, c); }
static inline int ckvm_get_pit2(int vm, struct kvm_pit_state2 *p) { return ioctl(vm, KVM_GET_PIT2, p); }
static inline int ckvm_set_pit2(int vm, const struct kvm_pit_state2 *p) { return ioctl(vm, KVM_SET_PIT2, p); }
static inline int ckvm_get_clock(int vm, struct kvm_clock_data *c) { return ioctl(vm, KVM_GET_CLOCK, c); }
static inline int ckvm_set_clock(int vm, const struct kvm_clock_data *c) { return ioctl(vm, KVM_SET_CLOCK, c); }
static inline uint32_t ckvm_irqchip_pic_master(void) { return KVM_IRQCHIP_PIC_MASTER; }
static inline uint32_t ckvm_irqchip_pic_slave(void) { return KVM_IRQCHIP_PIC_SLAVE; }
static inline uint32_t ckvm_irqchip_ioapic(void) { return KVM_IRQCHIP_IOAPIC; }

// MARK: - kvm_run accessors (anonymous unions and arrays are awkward from Swift)

// immediate_exit is written by the freeze/kill path from another thread while the vCPU
// thread may be about to enter KVM_RUN: sequentially consistent so it orders against the
// Swift atomics that say "freeze requested" / "kill requested".
static inline void ckvm_run_set_immediate_exit(struct kvm_run *r, uint8_t v) {
    __atomic_store_n(&r->immediate_exit, v, __ATOMIC_SEQ_CST);
}
static inline uint8_t ckvm_run_immediate_exit(const struct kvm_run *r) {
    return __atomic_load_n(&r->immediate_exit, __ATOMIC_SEQ_CST);
}
static inline uint32_t ckvm_run_exit_reason(const struct kvm_run *r) { return r->exit_reason; }
static inline void ckvm_run_set_exit_reason(struct kvm_run *r, uint32_t v) { r->exit_reason = v; }

// KVM_EXIT_IO
static inline uint8_t ckvm_run_io_direction(const struct kvm_run *r) { return r->io.direction; }
static inline uint8_t ckvm_run_io_size(const struct kvm_run *r) { return r->io.size; }
static inline uint16_t ckvm_run_io_port(const struct kvm_run *r) { return r->io.port; }
static inline uint32_t ckvm_run_io_count(const struct kvm_run *r) { return r->io.count; }
static inline uint64_t ckvm_run_io_data_offset(const struct kvm_run *r) { return r->io.data_offset; }
static inline void ckvm_run_set_io(struct kvm_run *r, uint8_t dir, uint8_t size, uint16_t port, uint32_t count, uint64_t off) {
    r->io.direction = dir; r->io.size = size; r->io.port = port; r->io.count = count; r->io.data_offset = off;
}

// KVM_EXIT_MMIO
static inline uint64_t ckvm_run_mmio_phys_addr(const struct kvm_run *r) { return r->mmio.phys_addr; }
static inline uint32_t ckvm_run_mmio_len(const struct kvm_run *r) { return r->mmio.len; }
static inline uint8_t ckvm_run_mmio_is_write(const struct kvm_run *r) { return r->mmio.is_write; }
static inline uint8_t *ckvm_run_mmio_data(struct kvm_run *r) { return r->mmio.data; }
static inline void ckvm_run_set_mmio(struct kvm_run *r, uint64_t addr, uint32_t len, uint8_t is_write) {
    r->mmio.phys_addr = addr; r->mmio.len = len; r->mmio.is_write = is_write;
}

// KVM_EXIT_DEBUG (x86: exception, pc, dr6, dr7)
static inline uint32_t ckvm_run_debug_exception(const struct kvm_run *r) { return r->debug.arch.exception; }
static inline uint64_t ckvm_run_debug_pc(const struct kvm_run *r) { return r->debug.arch.pc; }
static inline uint64_t ckvm_run_debug_dr6(const struct kvm_run *r) { return r->debug.arch.dr6; }
static inline uint64_t ckvm_run_debug_dr7(const struct kvm_run *r) { return r->debug.arch.dr7; }
static inline void ckvm_run_set_debug(struct kvm_run *r, uint32_t exception, uint64_t pc, uint64_t dr6, uint64_t dr7) {
    r->debug.arch.exception = exception; r->debug.arch.pc = pc; r->debug.arch.dr6 = dr6; r->debug.arch.dr7 = dr7;
}

// KVM_EXIT_INTERNAL_ERROR
static inline uint32_t ckvm_run_internal_suberror(const struct kvm_run *r) { return r->internal.suberror; }
static inline uint32_t ckvm_run_internal_ndata(const struct kvm_run *r) { return r->internal.ndata; }
// data[i] for i < 16; the caller bounds i by min(ndata, ckvm_run_internal_data_capacity()).
static inline uint64_t ckvm_run_internal_data(const struct kvm_run *r, uint32_t i) { return i < 16 ? r->internal.data[i] : 0; }
static inline uint32_t ckvm_run_internal_data_capacity(void) { return 16; }
static inline void ckvm_run_set_internal(struct kvm_run *r, uint32_t suberror, uint32_t ndata) {
    r->internal.suberror = suberror; r->internal.ndata = ndata;
}

// KVM_EXIT_FAIL_ENTRY
static inline uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *r) { return r->fail_entry.hardware_entry_failure_reason; }
static inline uint32_t ckvm_run_fail_entry_cpu(const struct kvm_run *r) { return r->fail_entry.cpu; }

// KVM_EXIT_UNKNOWN
static inline uint64_t ckvm_run_hw_exit_reason(const struct kvm_run *r) { return r->hw.hardware_exit_reason; }

// KVM_EXIT_SYSTEM_EVENT
static inline uint32_t ckvm_run_system_event_type(const struct kvm_run *r) { return r->system_event.type; }
static inline uint32_t ckvm_run_system_event_ndata(const struct kvm_run *r) { return r->system_event.ndata; }
static inline uint64_t ckvm_run_system_event_data(const struct kvm_run *r, uint32_t i) { return i < 16 ? r->system_event.data[i] : 0; }
static inline void ckvm_run_set_system_event(struct kvm_run *r, uint32_t type, uint32_t ndata) {
    r->system_event.type = type; r->system_event.ndata = ndata;
}

// MARK: - Flexible-array structs (entries[] does not import into Swift)

// kvm_cpuid2 with room for `n` entries, zeroed, nent = n. Free with free().
static inline struct kvm_cpuid2 *ckvm_cpuid2_alloc(uint32_t n) {
    struct kvm_cpuid2 *c = calloc(1, sizeof(struct kvm_cpuid2) + (size_t)n * sizeof(struct kvm_cpuid_entry2));
    if (c) c->nent = n;
    return c;
}
static inline struct kvm_cpuid_entry2 *ckvm_cpuid2_entries(struct kvm_cpuid2 *c) { return c->entries; }

// kvm_msrs with room for `n` entries, zeroed, nmsrs = n. Free with free().
static inline struct kvm_msrs *ckvm_msrs_alloc(uint32_t n) {
    struct kvm_msrs *m = calloc(1, sizeof(struct kvm_msrs) + (size_t)n * sizeof(struct kvm_msr_entry));
    if (m) m->nmsrs = n;
    return m;
}
static inline struct kvm_msr_entry *ckvm_msrs_entries(struct kvm_msrs *m) { return m->entries; }

// kvm_msr_list with room for `n` indices. Free with free().
static inline struct kvm_msr_list *ckvm_msr_list_alloc(uint32_t n) {
    struct kvm_msr_list *l = calloc(1, sizeof(struct kvm_msr_list) + (size_t)n * sizeof(uint32_t));
    if (l) l->nmsrs = n;
    return l;
}
static inline uint32_t *ckvm_msr_list_indices(struct kvm_msr_list *l) { return l->indices; }

// kvm_irq_routing with room for `n` entries. Free with free().
static inline struct kvm_irq_routing *ckvm_irq_routing_alloc(uint32_t n) {
    struct kvm_irq_routing *r = calloc(1, sizeof(struct kvm_irq_routing) + (size_t)n * sizeof(struct kvm_irq_routing_entry));
    if (r) r->nr = n;
    return r;
}
static inline struct kvm_irq_routing_entry *ckvm_irq_routing_entries(struct kvm_irq_routing *r) { return r->entries; }

// MARK: - eventfd

static inline int ckvm_eventfd(unsigned int initval, int flags) { return eventfd(initval, flags); }
static inline int ckvm_eventfd_flags_cloexec_nonblock(void) { return EFD_CLOEXEC | EFD_NONBLOCK; }
static inline int ckvm_eventfd_flags_cloexec(void) { return EFD_CLOEXEC; }

// errno as an lvalue-free read: Swift's `errno` works too, this is for symmetry in tests.
static inline int ckvm_errno(void) { return errno; }

#endif
