"""Continual-learning metrics from the accuracy matrix R, where R[i][j] is the accuracy on task j's
classes after training phase i (defined for j <= i).

- A_avg / A_last: mean and last value of the per-phase accuracy on all classes seen so far.
- BWT (Lopez-Paz & Ranzato 2017): mean over the first T-1 tasks of R[T-1][j] - R[j][j].
- forgetting (Chaudhry et al. 2018, average forgetting): mean over the first T-1 tasks of
  max_{l < T-1} R[l][j] - R[T-1][j].
- published_bwt: the figure the published ASC-CL code logs as "BWT". After each phase t >= 1 it
  appends the mean of the consecutive differences of phase accuracy so far, and reports the mean of
  that list, i.e. mean over t of (a[t] - a[0]) / t. Kept only so results compare with the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def _check_matrix(matrix: Matrix) -> int:
    for i, row in enumerate(matrix):
        if len(row) < i + 1:
            raise ValueError(f"accuracy matrix row {i} has {len(row)} entries, expected >= {i + 1}")
    return len(matrix)


def average_accuracy(phase_accuracy: Sequence[float]) -> float | None:
    """A_avg: mean of the per-phase accuracy on all seen classes (None when there are no phases)."""
    return sum(phase_accuracy) / len(phase_accuracy) if phase_accuracy else None


def last_accuracy(phase_accuracy: Sequence[float]) -> float | None:
    """A_last: accuracy on all classes after the last phase."""
    return phase_accuracy[-1] if phase_accuracy else None


def backward_transfer(matrix: Matrix) -> float | None:
    """Lopez-Paz & Ranzato BWT; None with fewer than two phases."""
    n = _check_matrix(matrix)
    if n < 2:
        return None
    return sum(matrix[n - 1][j] - matrix[j][j] for j in range(n - 1)) / (n - 1)


def average_forgetting(matrix: Matrix) -> float | None:
    """Average forgetting over the tasks before the last; None with fewer than two phases."""
    n = _check_matrix(matrix)
    if n < 2:
        return None
    drops = [max(matrix[i][j] for i in range(j, n - 1)) - matrix[n - 1][j] for j in range(n - 1)]
    return sum(drops) / len(drops)


def published_bwt(phase_accuracy: Sequence[float]) -> float | None:
    """The published code's BWT figure (see module docstring); None with fewer than two phases."""
    acc = list(phase_accuracy)
    if len(acc) < 2:
        return None
    running = []
    for t in range(1, len(acc)):
        diffs = [acc[i + 1] - acc[i] for i in range(t)]
        running.append(sum(diffs) / len(diffs))
    return sum(running) / len(running)


def summarize(phase_accuracy: Sequence[float], matrix: Matrix) -> dict[str, float | None]:
    """All headline metrics as one dict (the keys results.json uses)."""
    return {
        "A_avg": average_accuracy(phase_accuracy),
        "A_last": last_accuracy(phase_accuracy),
        "BWT": backward_transfer(matrix),
        "forgetting": average_forgetting(matrix),
        "published_bwt": published_bwt(phase_accuracy),
    }
