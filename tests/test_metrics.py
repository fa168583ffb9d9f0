"""Continual-learning metrics on a hand-made accuracy matrix."""

from __future__ import annotations

import pytest

from edgecl import metrics

# R[i][j]: accuracy on task j after phase i (hand-made, three phases)
MATRIX = [
    [0.90],
    [0.60, 0.80],
    [0.50, 0.70, 0.95],
]
PHASE_ACCURACY = [0.90, 0.70, 0.72]


def test_bwt_follows_lopez_paz_ranzato():
    # ((0.50 - 0.90) + (0.70 - 0.80)) / 2 = -0.25
    assert metrics.backward_transfer(MATRIX) == pytest.approx(-0.25)


def test_average_forgetting_uses_best_earlier_accuracy():
    # task 0: max(0.90, 0.60) - 0.50 = 0.40; task 1: 0.80 - 0.70 = 0.10 -> mean 0.25
    matrix = [[0.50], [0.90, 0.80], [0.50, 0.70, 0.95]]
    assert metrics.average_forgetting(matrix) == pytest.approx((0.40 + 0.10) / 2)
    # With the peak at the diagonal, forgetting is the negative of BWT.
    assert metrics.average_forgetting(MATRIX) == pytest.approx(0.25)


def test_published_bwt_is_mean_of_running_consecutive_difference_means():
    # after phase 1: mean([-0.20]) = -0.20; after phase 2: mean([-0.20, 0.02]) = -0.09
    assert metrics.published_bwt(PHASE_ACCURACY) == pytest.approx((-0.20 + -0.09) / 2)


def test_average_and_last_accuracy():
    summary = metrics.summarize(PHASE_ACCURACY, MATRIX)
    assert summary["A_avg"] == pytest.approx(sum(PHASE_ACCURACY) / 3)
    assert summary["A_last"] == pytest.approx(0.72)
    assert summary["BWT"] == pytest.approx(-0.25)


def test_single_phase_has_no_transfer_metrics():
    summary = metrics.summarize([0.8], [[0.8]])
    assert summary["A_avg"] == 0.8
    assert summary["BWT"] is None and summary["forgetting"] is None
    assert summary["published_bwt"] is None


def test_ragged_matrix_is_rejected():
    with pytest.raises(ValueError):
        metrics.backward_transfer([[0.5], [0.4]])
