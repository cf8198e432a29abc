// Intentionally empty: SwiftPM wants one C source per C target. Everything is inline in ckvm.h.
#include "ckvm.h"
