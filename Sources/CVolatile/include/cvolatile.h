#ifndef KTSTR_CVOLATILE_H
#define KTSTR_CVOLATILE_H
#include <stdint.h>

// Volatile loads from guest RAM that a running guest (or qemu) may be writing concurrently:
// the exit_kind watch polls these, and the compiler must neither cache nor tear the read.
// Swift has no volatile access of its own; this is the whole of the shim.
static inline uint32_t ktstr_load_volatile_u32(const void *p) {
    return *(const volatile uint32_t *)p;
}
static inline uint64_t ktstr_load_volatile_u64(const void *p) {
    return *(const volatile uint64_t *)p;
}

#endif
