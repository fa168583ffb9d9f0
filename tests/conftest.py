"""Shared fixtures. Tests on the real FSDD corpus skip cleanly when ../shared is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FSDD_MANIFEST = PROJECT_ROOT.parent / "shared" / "datasets" / "fsdd" / "manifest.csv"


@pytest.fixture
def fsdd_manifest() -> Path:
    """Path to ../shared/datasets/fsdd/manifest.csv, or skip the test when it is absent."""
    if not FSDD_MANIFEST.is_file():
        pytest.skip(f"real corpus not present at {FSDD_MANIFEST}")
    return FSDD_MANIFEST


def pytest_configure(config):
    # One intra-op thread: CI has 2 cores, and pytest plus torch's thread pool fighting over
    # them makes small forward passes 10-100x slower than single-threaded.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Runs set torch's thread count from their config; put it back after every test."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
