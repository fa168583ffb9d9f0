"""numpy's BLAS thread count: set for a block, restored after it."""

from __future__ import annotations

import pytest

from edgecl.blas import _controls, blas_threads


def _counts() -> list[int]:
    return [getter() for _, getter in _controls()]


def test_block_runs_on_the_given_count_and_the_previous_count_returns():
    if not _controls():
        pytest.skip("numpy's BLAS is not an OpenBLAS whose thread count can be set")
    before = _counts()
    with blas_threads(1):
        assert _counts() == [1] * len(before)
    assert _counts() == before


def test_count_is_restored_when_the_block_raises():
    before = _counts()
    with pytest.raises(RuntimeError), blas_threads(1):
        raise RuntimeError("inside")
    assert _counts() == before

