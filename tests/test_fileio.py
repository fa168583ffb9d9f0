"""Atomic writes: whole files or nothing, and modes that follow the user's umask."""

from __future__ import annotations

import os
import stat

import pytest

from edgecl.errors import EdgeclError
from edgecl.fileio import atomic_write_bytes, atomic_write_json, atomic_write_with, staging_folder


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_staging_folders_follow_the_umask(tmp_path, umask_022):
    assert _mode(atomic_write_bytes(tmp_path / "a.bin", b"x")) == 0o644
    assert _mode(atomic_write_json(tmp_path / "r.json", {"a": 1})) == 0o644
    assert _mode(atomic_write_with(tmp_path / "c.pt", lambda p: p.write_bytes(b"y"))) == 0o644
    folder = staging_folder(tmp_path / "bundle")
    assert folder.name.startswith(".bundle.") and _mode(folder) == 0o755
    os.umask(0o077)
    assert _mode(atomic_write_bytes(tmp_path / "private.bin", b"z")) == 0o600


def test_a_failed_write_leaves_neither_the_target_nor_a_temp_file(tmp_path):
    def fail(path):
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(EdgeclError, match=r"model\.pt: could not write \(No space left"):
        atomic_write_with(tmp_path / "model.pt", fail)
    assert list(tmp_path.iterdir()) == []
