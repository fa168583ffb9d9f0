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


@pytest.mark.parametrize(("setting", "expected"), [("always [madvise] never\n", "1"),
                                                   ("[always] madvise never\n", "1"),
                                                   ("always madvise [never]\n", None)])
def test_huge_pages_are_asked_for_where_the_kernel_offers_them(tmp_path, monkeypatch, setting,
                                                                expected):
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    path = tmp_path / "enabled"
    path.write_text(setting)
    environ: dict[str, str] = {}
    assert allocator.allow_huge_pages(environ, path) is (expected is not None)
    assert environ.get(allocator.THP_SWITCH) == expected


def test_huge_pages_keep_a_set_choice_and_need_linux_thp(tmp_path, monkeypatch):
    path = tmp_path / "enabled"
    path.write_text("always [madvise] never\n")
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    environ = {allocator.THP_SWITCH: "0"}
    assert not allocator.allow_huge_pages(environ, path)
    assert environ == {allocator.THP_SWITCH: "0"}
    environ = {}
    assert not allocator.allow_huge_pages(environ, tmp_path / "missing")
    assert environ == {}
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert not allocator.allow_huge_pages(environ, path)
    assert environ == {}


def test_the_cli_asks_for_huge_pages_before_torch_is_imported():
    import os
    import subprocess
    import sys

    probe = ("import os, sys; import edgecl.cli; "
             "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != allocator.THP_SWITCH}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    expected = allocator.allow_huge_pages({})
    assert out == ["1" if expected else "None", "False"]


STEPS_CHILD = r"""
import hashlib, torch
from models import build_model
from models.frontend import FrontEndConfig
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model("bc-resnet", 4, FrontEndConfig.for_sample_rate(16000), width=8).train()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
batch, targets = torch.randn(8, 1, 64, 400), torch.arange(8) % 4  # 3 MB maps: huge-page sized
for _ in range(2):
    optimizer.zero_grad()
    logits, _ = model.forward_features(batch)
    torch.nn.functional.cross_entropy(logits, targets).backward()
    optimizer.step()
digest = hashlib.sha256()
for tensor in model.state_dict().values():
    digest.update(tensor.numpy().tobytes())
print(digest.hexdigest())
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="transparent huge pages are Linux's")
def test_huge_pages_leave_training_bit_identical():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    digests = []
    for switch in ("0", "1"):
        env = dict(os.environ, **{allocator.THP_SWITCH: switch})
        digests.append(subprocess.run([sys.executable, "-c", STEPS_CHILD], cwd=root, env=env,
                                      capture_output=True, text=True, check=True).stdout)
    assert digests[0] == digests[1] and len(digests[0].strip()) == 64
