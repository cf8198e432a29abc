// CKVM: <linux/kvm.h> for Swift. Static inline wrappers only; no logic lives here.
// Owner: KVM core. Swift cannot call the variadic ioctl(2) nor import _IOR/_IOW macros,
// so every request used by KtstrVMM gets a small typed function here.
#ifndef CKVM_H
#define CKVM_H

#include <stdint.h>
#include <linux/kvm.h>

// A volatile 32-bit load from host memory that the guest may be writing concurrently
// (used by the exit_kind watch: the compiler must not cache or tear the read).
static inline uint32_t ckvm_load_volatile_u32(const void *p) {
    return *(const volatile uint32_t *)p;
}
static inline uint64_t ckvm_load_volatile_u64(const void *p) {
    return *(const volatile uint64_t *)p;
}

#endif
