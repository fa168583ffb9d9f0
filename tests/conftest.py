"""Shared test setup: torch's thread count, the real FSDD corpus (tests skip cleanly when
../shared is absent) and a tiny manifest dataset for end-to-end runs."""

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


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    """A manifest dataset of four classes ("a"-"d"), six 0.25-s clips each at 8 kHz (two of them
    test clips): big enough for a two-task run in a second or two."""
    from fixtures_audio import write_manifest_dataset

    return write_manifest_dataset(tmp_path_factory.mktemp("tiny"), labels=("a", "b", "c", "d"),
                                  clips_per_class=6, test_per_class=2, seconds=0.25,
                                  sample_rate=8000)


@pytest.fixture(scope="session")
def six_class_manifest(tmp_path_factory) -> Path:
    """A manifest dataset of six classes ("a"-"f"), eight 0.25-s clips each at 8 kHz (two of them
    test clips): three tasks of two classes with room for a replay memory."""
    from fixtures_audio import write_manifest_dataset

    return write_manifest_dataset(tmp_path_factory.mktemp("six"),
                                  labels=("a", "b", "c", "d", "e", "f"), clips_per_class=8,
                                  test_per_class=2, seconds=0.25, sample_rate=8000)


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
