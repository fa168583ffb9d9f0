"""edgecl.allocator: glibc's malloc keeps freed memory where it can; elsewhere nothing happens."""

from __future__ import annotations

import ctypes
import platform

import pytest

from edgecl import allocator

GLIBC = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc malloc settings")


@pytest.fixture
def mallopt_calls(monkeypatch):
    """The (option, value) pairs passed to glibc's mallopt, which still applies them."""
    monkeypatch.setattr(allocator, "_done", False)
    calls = []
    real = ctypes.CDLL

    class Recording:
        def __init__(self, name):
            self.libc = real(name)

        def __getattr__(self, attr):
            function = getattr(self.libc, attr)
            if attr != "mallopt":
                return function

            class Mallopt:
                argtypes = restype = None

                def __call__(self, option, value):
                    calls.append((option, value))
                    return function(option, value)
            return Mallopt()

    monkeypatch.setattr(allocator.ctypes, "CDLL", Recording)
    yield calls
    allocator.keep_freed_memory()  # the rest of the session keeps freed memory, as it did


@GLIBC
def test_glibc_takes_the_settings_once(mallopt_calls):
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert mallopt_calls == [(allocator.M_MMAP_MAX, 0),
                             (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD_BYTES)]


@GLIBC
def test_returning_freed_memory_maps_large_blocks_and_can_be_undone(mallopt_calls):
    allocator.keep_freed_memory()
    assert allocator.return_freed_memory()
    assert mallopt_calls[2:] == [(allocator.M_MMAP_MAX, allocator.GLIBC_MMAP_MAX),
                                 (allocator.M_MMAP_THRESHOLD, allocator.RETURNED_BLOCK_BYTES),
                                 (allocator.M_TRIM_THRESHOLD, allocator.RETURNED_TRIM_BYTES)]
    # A later run of the same process keeps freed memory again.
    assert allocator.keep_freed_memory()
    assert mallopt_calls[5:] == mallopt_calls[:2]


def test_without_mallopt_it_does_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_done", False)

    class NoMallopt:
        def __init__(self, name):
            pass

    monkeypatch.setattr(allocator.ctypes, "CDLL", NoMallopt)
    assert allocator.keep_freed_memory() is False

    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(allocator.ctypes, "CDLL", missing)
    assert allocator.keep_freed_memory() is False
