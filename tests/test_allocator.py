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


def _train_in_child(env: dict[str, str]) -> list[str]:
    """(weights digest, caching allocator loaded, purge worked, purge freed over 1 MB) of
    STEPS_CHILD run with `env`."""
    import subprocess
    import sys
    from pathlib import Path

    code = STEPS_CHILD + ("from edgecl import allocator\n"
                          "from edgecl.budget.ram import current_rss_bytes\n"
                          "del batch, logits\n"
                          "before = current_rss_bytes()\n"
                          "purged = allocator.purge_caching_allocator()\n"
                          "print(allocator.caching_allocator_loaded(), purged, "
                          "before - current_rss_bytes() > 2 ** 20)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert len(out[0]) == 64
    return out


@pytest.mark.slow  # two training processes: about 30 s on a loaded machine
@pytest.mark.skipif(platform.system() != "Linux", reason="transparent huge pages are Linux's")
def test_huge_pages_leave_training_bit_identical():
    import os

    runs = [_train_in_child(dict(os.environ, **{allocator.THP_SWITCH: switch}))
            for switch in ("0", "1")]
    assert runs[0][0] == runs[1][0]


@pytest.mark.slow  # two training processes: about 30 s on a loaded machine
@pytest.mark.skipif(allocator.find_caching_allocator() is None, reason="jemalloc not installed")
def test_the_caching_allocator_leaves_training_bit_identical():
    import os

    plain = dict(os.environ, **{allocator.ALLOCATOR_SWITCH: "system"})
    plain.pop("LD_PRELOAD", None)
    caching = allocator.caching_allocator_environment(plain | {allocator.ALLOCATOR_SWITCH: ""})
    assert caching is not None
    system, cached = _train_in_child(plain), _train_in_child(caching)
    assert system[0] == cached[0]
    # Loaded only where asked for; purging hands the training's kept pages back.
    assert system[1:] == ["False", "False", "False"] and cached[1:] == ["True", "True", "True"]


def test_caching_allocator_environment(monkeypatch):
    monkeypatch.setattr(allocator, "caching_allocator_loaded", lambda: False)
    library = "/lib/libjemalloc.so.2"
    env = allocator.caching_allocator_environment({"LD_PRELOAD": "/lib/other.so", "A": "1",
                                                   "MALLOC_CONF": "narenas:1"}, library)
    assert env == {"LD_PRELOAD": f"{library} /lib/other.so", "A": "1",
                   "MALLOC_CONF": f"{allocator.CACHING_MALLOC_CONF},narenas:1"}
    assert allocator.caching_allocator_environment({}, library)["LD_PRELOAD"] == library
    # Opted out, or preloaded already (the loader refused it): no restart.
    assert allocator.caching_allocator_environment({allocator.ALLOCATOR_SWITCH: "system"},
                                                   library) is None
    assert allocator.caching_allocator_environment({"LD_PRELOAD": library}, library) is None
    monkeypatch.setattr(allocator, "find_caching_allocator", lambda: None)
    assert allocator.caching_allocator_environment({}) is None
    monkeypatch.setattr(allocator, "caching_allocator_loaded", lambda: True)
    assert allocator.caching_allocator_environment({}, library) is None


def test_only_training_commands_restart_under_the_caching_allocator(monkeypatch):
    from edgecl import cli

    execs = []
    monkeypatch.setattr(cli, "caching_allocator_environment", lambda: {"LD_PRELOAD": "x"})
    monkeypatch.setattr(cli.os, "execve", lambda *a: execs.append(a))
    monkeypatch.setattr(cli.sys, "orig_argv", ["python", "-m", "edgecl", "train"])
    for argv in (["edgecl", "export"], ["edgecl"], ["edgecl", "--help"]):
        cli.restart_under_caching_allocator(argv)
    assert execs == []
    cli.restart_under_caching_allocator(["edgecl", "train"])
    assert execs == [(cli.sys.executable, ["python", "-m", "edgecl", "train"],
                      {"LD_PRELOAD": "x"})]
    monkeypatch.setattr(cli, "caching_allocator_environment", lambda: None)  # none installed
    cli.restart_under_caching_allocator(["edgecl", "bench"])
    assert len(execs) == 1
