"""Keep freed memory in the process (glibc malloc settings), so large tensors stop page-faulting.

By default glibc serves every allocation above a threshold (at most 32 MB) with its own mmap and
hands it back on free. One BC-ResNet-40 activation map at 44.1 kHz 5 s and batch 32 is ~56 MB, so
every training step and every large embedding batch maps fresh pages and the kernel zeroes them on
first touch: measured on 1 thread, 32-clip training steps spent 5.8 s in the kernel against 7.4 s
of user time, and 1.3 s in the kernel with the settings below (`edgecl bench train` shows the epoch
time; docs/results/speed.md, "Training epochs"). The arithmetic is unchanged (results are
bit-identical); the cost is a higher peak RSS, since freed memory stays with the process for its
next step.

`keep_freed_memory()` sets M_MMAP_MAX = 0 (no per-allocation mmap) and M_TRIM_THRESHOLD = 1 GiB
(the heap is not shrunk below that much free memory). It is a no-op where malloc is not glibc's.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30

_done = False


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True when glibc accepted them."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _done


def release_freed_memory() -> bool:
    """Collect garbage and hand the heap's free memory back to the system (glibc malloc_trim), so
    that a measurement of the resident set that follows starts from what is in use, not from what
    earlier work freed but the settings above keep. False where malloc is not glibc's."""
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
