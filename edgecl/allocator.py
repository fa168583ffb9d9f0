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

The heap then fragments: a training step's maps of a few sizes (at 48 kHz x 10 s and batch 32,
246, 123, 46 and 15 MB) are freed and requested in another order in backward, a smaller request
splits a freed large block, and the next large one extends the heap. Measured
(scripts/trace_step_memory.py), the heap grows to 2.5-3.3 times the bytes in use at the step's
peak, and every page of it stays resident. `return_freed_memory()` is the other trade: blocks of
RETURNED_BLOCK_BYTES and more are mapped for themselves and unmapped on free (glibc's own
defaults, held fixed), so the resident set follows the bytes in use, for the kernel's page
zeroing on every such block (docs/results/training-memory.md).

`allow_huge_pages()` makes that zeroing cheaper: torch's CPU allocator, when THP_MEM_ALLOC_ENABLE
is set, aligns allocations of 2 MB and more to 2 MB and advises the kernel to back them with
transparent huge pages (one fault and one 2 MB clear instead of 512 of each). Measured on a
TAU-ASC step, it halves the kernel time of returned blocks and leaves steps that keep their
memory as they were; only addresses change, not the arithmetic. torch reads the variable once, at
its first allocation, so the CLI sets it before any command imports torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD_BYTES = 1 << 30
# glibc's own ceiling of its dynamic mmap threshold, and its trim threshold at that ceiling.
RETURNED_BLOCK_BYTES = 32 << 20
RETURNED_TRIM_BYTES = 64 << 20
GLIBC_MMAP_MAX = 65536

THP_SWITCH = "THP_MEM_ALLOC_ENABLE"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")

_done = False


def allow_huge_pages(environ=os.environ, setting: Path = THP_SETTING) -> bool:
    """Ask torch's CPU allocator for transparent huge pages (THP_SWITCH=1 in `environ`, which child
    processes inherit) where Linux offers them; a value already set is kept (0 turns them off).
    Takes effect only in a process whose torch has not allocated yet. True when set here."""
    if not sys.platform.startswith("linux") or THP_SWITCH in environ:
        return False
    try:
        available = "[never]" not in setting.read_text()
    except OSError:  # no THP in this kernel
        return False
    if available:
        environ[THP_SWITCH] = "1"
    return available


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True when glibc accepted them."""
    global _done
    if _done:
        return True
    _done = _mallopt((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _done


def return_freed_memory() -> bool:
    """Undo keep_freed_memory for the rest of the process (until it is called again): large
    blocks go back to the system when freed, and what the heap keeps now is handed back. Same
    arithmetic, a lower peak resident set, more time in the kernel. False where malloc is not
    glibc's."""
    global _done
    _done = False
    done = _mallopt((M_MMAP_MAX, GLIBC_MMAP_MAX), (M_MMAP_THRESHOLD, RETURNED_BLOCK_BYTES),
                    (M_TRIM_THRESHOLD, RETURNED_TRIM_BYTES))
    return done and release_freed_memory()


def _mallopt(*settings: tuple[int, int]) -> bool:
    """Apply glibc mallopt settings in order; True when every one was accepted."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([bool(mallopt(option, value)) for option, value in settings])


def release_freed_memory() -> bool:
    """Collect garbage and hand the heap's free memory back to the system (glibc malloc_trim), so
    that a measurement of the resident set that follows starts from what is in use, not from what
    earlier work freed but the settings above keep. False where malloc is not glibc's."""
    import gc

    gc.collect()
    return trim_heap()


def trim_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc malloc_trim), without collecting
    garbage first: a large block freed in the middle of the heap otherwise stays resident. Under
    the caching allocator, its unused pages go back instead. False where malloc is neither."""
    if purge_caching_allocator():
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


# --- a caching allocator for the whole process ---------------------------------------------------
# glibc can either keep freed memory (its heap then fragments to 2.5-3.5 times the bytes in use)
# or return it (every large block is then zeroed again by the kernel). jemalloc serves each size
# from its own size class, so a freed map is reused by the next map of its size; with purging
# off (CACHING_MALLOC_CONF) it never returns pages either. A TAU-ASC step at batch 32 then peaks
# near its bytes in use at the plain step's speed (docs/results/training-memory.md). It replaces
# malloc for the whole process, so it has to be loaded when the process starts (LD_PRELOAD): the
# CLI restarts itself under it when the library is installed (caching_allocator_environment).
CACHING_LIBRARY = "libjemalloc.so.2"
CACHING_MALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
ALLOCATOR_SWITCH = "EDGECL_ALLOCATOR"  # "system" keeps the platform's malloc
MALLCTL_ARENAS_ALL = 4096


def caching_allocator_loaded() -> bool:
    """True when this process's malloc is jemalloc's (loaded by LD_PRELOAD or linked in)."""
    try:
        return "libjemalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def find_caching_allocator() -> str | None:
    """The path of an installed jemalloc shared library (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                   "/usr/lib", "/usr/local/lib"):
        path = Path(folder) / CACHING_LIBRARY
        if path.is_file():
            return str(path)
    return None


def caching_allocator_environment(environ=os.environ,
                                  library: str | None = None) -> dict[str, str] | None:
    """The environment that starts this program again under the caching allocator, or None when
    it already runs under it, none is installed, or ALLOCATOR_SWITCH=system asks for the
    platform's malloc. Only the allocator changes: same arithmetic, same results."""
    if environ.get(ALLOCATOR_SWITCH) == "system" or caching_allocator_loaded():
        return None
    library = library or find_caching_allocator()
    if library is None or library in environ.get("LD_PRELOAD", ""):
        return None  # not installed, or preloaded already and refused by the loader
    preload = " ".join(filter(None, [library, environ.get("LD_PRELOAD", "")]))
    conf = ",".join(filter(None, [CACHING_MALLOC_CONF, environ.get("MALLOC_CONF", "")]))
    return dict(environ, LD_PRELOAD=preload, MALLOC_CONF=conf)


def trains_under_caching_allocator() -> bool:
    """Whether a training command started from here runs under the caching allocator: this
    process does, or the command restarts under it (the grid's trials)."""
    return caching_allocator_loaded() or caching_allocator_environment() is not None


def purge_caching_allocator() -> bool:
    """Hand jemalloc's unused pages back to the system (its counterpart of malloc_trim); False
    where the process does not run under it."""
    if not caching_allocator_loaded():
        return False
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return False
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    return mallctl(f"arena.{MALLCTL_ARENAS_ALL}.purge".encode(), None, None, None, 0) == 0
