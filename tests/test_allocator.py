"""edgecl.allocator: glibc's malloc keeps freed memory where it can; elsewhere nothing happens."""

from __future__ import annotations

import ctypes
import platform

import pytest

from edgecl import allocator


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc malloc settings")
def test_glibc_takes_the_settings_once(monkeypatch):
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
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert calls == [(allocator.M_MMAP_MAX, 0),
                     (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD_BYTES)]


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
