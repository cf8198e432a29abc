// Header-only: see include/cvolatile.h.
