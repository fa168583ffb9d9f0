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
