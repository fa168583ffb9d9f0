"""The thread count of numpy's BLAS (OpenBLAS), which `torch.set_num_threads` does not reach.

numpy's OpenBLAS starts one thread per core. On a small matrix product (a window's log-mel) the
second thread saves little, and it keeps spinning after each product waiting for the next one,
which on a loaded machine costs CPU time several times the product's own. The count can change
the last bits of some float64 products (OpenBLAS's edge tiles depend on how the output is split
between threads), so a product held to one thread no longer depends on the machine's cores.

Torch-free: only numpy's own OpenBLAS, found among the libraries the process has loaded
(/proc/self/maps). Elsewhere (another BLAS, no /proc) `blas_threads` leaves the count alone.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

# (setter, getter) symbol pairs: scipy-openblas wheels (numpy >= 2) prefix and suffix them.
_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
            ("openblas_set_num_threads", "openblas_get_num_threads"))


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process, numpy's among them."""
    import numpy  # noqa: F401  (loads numpy's OpenBLAS before the maps are read)

    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    paths = {line.split(maxsplit=5)[-1] for line in lines if "openblas" in line.lower()}
    return sorted(path for path in paths if path.startswith("/"))


@cache
def _controls() -> tuple[tuple, ...]:
    """(set, get) ctypes functions of every loaded OpenBLAS that has them."""
    found = []
    for path in _loaded_openblas():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            if hasattr(library, set_name) and hasattr(library, get_name):
                setter, getter = getattr(library, set_name), getattr(library, get_name)
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                found.append((setter, getter))
                break
    return tuple(found)


@contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """Run the block with numpy's OpenBLAS on `count` threads, then restore the previous
    counts."""
    controls = _controls()
    previous = [getter() for _, getter in controls]
    if previous == [count] * len(controls):
        yield
        return
    for setter, _ in controls:
        setter(count)
    try:
        yield
    finally:
        for (setter, _), before in zip(controls, previous, strict=True):
            setter(before)
