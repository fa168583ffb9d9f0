"""The analytic head: ridge regression on the frozen embedding, learnt by recursive least squares.

ACIL-style (analytic class-incremental learning): the classifier is W = R X^T L Y on the features
x = [(z - mean) / std, 1] of the embedding z, with R = (X^T L X + gamma I)^-1, L the diagonal of the
clips' weights and Y their one-hot targets. Adding clips is a Sherman-Morrison/Woodbury update of R
and W; removing clips (forgetting) is the same update with negated weights, so whatever order
clips come and go in, the head equals the batch ridge solution on the clips that remain. No clip
is stored here: a caller that wants to forget keeps each clip's embedding and weight (the bundle
keeps them; firmware_export.device.learnt_clips).

Class weighting: with "balanced", the clips of one `learn` call of a class get the weight
(clips per other class) / (clips of that class, these included), so a class learnt from 5 clips
carries as much mass as one trained on 200; without it the few new clips are drowned by the old
classes' mass and the new class is never predicted. "boosted" raises that ratio to the power
BOOST: a class with fewer clips than the mean class carries more than its mass, because ridge
regression on a few clips shrinks their class's scores on clips it has not seen (FSDD, 2 digits
learnt on a frozen backbone from 5 clips each: the errors are almost all new clips taken for an
old class; docs/results/analytic.md). A class holding the mean count weighs 1 either way. A clip
is removed with the weight it was added with (the caller records it: `learn` returns the
weights).

Random expansion (`expansion` B > 0): the standardised embedding s goes through a fixed random
ReLU projection before the ridge head, x = [max(s P, 0), 1] with P [D, B] drawn from the head's
`expansion_seed` (numpy's default generator, standard normal / sqrt(D)), so a state stores the
seed, not P; its bytes count P all the same, since a device holds it while the head runs.

numpy only, float64: used by the torch-free device runtime and by the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from edgecl.errors import EdgeclError
from edgecl.limits import MAX_ANALYTIC_EXPANSION

WEIGHTINGS = ("off", "balanced", "boosted")
BOOST = 1.25  # "boosted"'s exponent (docs/results/analytic.md: 1.5 over-predicts at 20 clips)


@cache
def random_projection(dim: int, width: int, seed: int) -> np.ndarray:
    """The fixed random projection P [dim, width] of an expansion (module doc); read-only."""
    projection: np.ndarray = np.random.default_rng(seed).standard_normal((dim, width)) / np.sqrt(dim)
    projection.setflags(write=False)
    return projection


def check_expansion(width: int, where: str = "analytic head") -> int:
    """`width` as an expansion width, or a one-line error."""
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not (
            0 <= int(width) <= MAX_ANALYTIC_EXPANSION):
        raise EdgeclError(f"{where}: the random expansion width must be an integer in "
                          f"[0, {MAX_ANALYTIC_EXPANSION}] (0 = none), got {width!r}")
    return int(width)


def packed_upper(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle of a symmetric [d, d] matrix, row by row: d (d + 1) / 2 values."""
    return matrix[np.triu_indices(len(matrix))].copy()


def unpack_upper(packed: np.ndarray, d: int) -> np.ndarray:
    """The symmetric [d, d] matrix from its packed upper triangle (packed_upper)."""
    packed = np.asarray(packed, dtype=np.float64).reshape(-1)
    if packed.size != d * (d + 1) // 2:
        raise EdgeclError(f"analytic state: packed R has {packed.size} values, expected "
                          f"{d * (d + 1) // 2} for dimension {d}")
    matrix = np.zeros((d, d))
    matrix[np.triu_indices(d)] = packed
    return matrix + np.triu(matrix, 1).T


def ridge_solution(features: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                   gamma: float, n_classes: int) -> np.ndarray:
    """The batch weighted ridge solution W = (X^T L X + gamma I)^-1 X^T L Y (the reference the
    recursive update must equal); `features` X [n, d], `targets` [n] class indices."""
    x = np.asarray(features, dtype=np.float64)
    y = np.eye(n_classes)[np.asarray(targets, dtype=np.int64)]
    w = np.asarray(weights, dtype=np.float64)[:, None]
    gram = x.T @ (w * x) + gamma * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ (w * y))


@dataclass
class AnalyticHead:
    """R, W and what they are defined on. `labels[j]` names column j of W; `clips[j]` and
    `mass[j]` are the number and the summed weight of the clips class j holds now."""

    mean: np.ndarray  # [D] embedding mean of the clips the standardisation was fit on
    std: np.ndarray  # [D]
    gamma: float
    weighting: str
    r: np.ndarray  # [d, d], d = D + 1
    w: np.ndarray  # [d, C]
    labels: list[str] = field(default_factory=list)
    clips: list[int] = field(default_factory=list)
    mass: list[float] = field(default_factory=list)
    expansion: int = 0  # B, the random expansion's width (0: none)
    expansion_seed: int = 0

    @classmethod
    def empty(cls, mean: np.ndarray, std: np.ndarray, *, gamma: float,
              weighting: str = "balanced", expansion: int = 0,
              expansion_seed: int = 0) -> AnalyticHead:
        """A head with no class yet: R = I / gamma, W with no columns."""
        if not gamma > 0:
            raise EdgeclError(f"analytic head: gamma must be positive, got {gamma}")
        if weighting not in WEIGHTINGS:
            raise EdgeclError(f"analytic head: weighting must be one of {', '.join(WEIGHTINGS)}, "
                              f"got {weighting!r}")
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        std = np.asarray(std, dtype=np.float64).reshape(-1)
        if mean.shape != std.shape or not np.all(std > 0):
            raise EdgeclError("analytic head: mean and std must have one shape and std be > 0")
        expansion = check_expansion(expansion)
        d = (expansion or mean.size) + 1
        return cls(mean=mean, std=std, gamma=float(gamma), weighting=weighting,
                   r=np.eye(d) / gamma, w=np.zeros((d, 0)), expansion=expansion,
                   expansion_seed=int(expansion_seed))

    @classmethod
    def standardised_on(cls, embeddings: np.ndarray, **options: Any) -> AnalyticHead:
        """An empty head whose standardisation is fit on `embeddings` [n, D] (std floored so a
        dead unit does not divide by zero)."""
        z = np.asarray(embeddings, dtype=np.float64)
        std = z.std(axis=0)
        return cls.empty(z.mean(axis=0), np.maximum(std, 1e-6 * max(std.max(), 1e-12)),
                         **options)

    @property
    def dim(self) -> int:
        """D, the embedding's width."""
        return self.mean.size

    @property
    def n_features(self) -> int:
        """d, the ridge head's input width: B + 1 with an expansion, else D + 1."""
        return (self.expansion or self.dim) + 1

    def projection(self) -> np.ndarray | None:
        """P [D, B] of the expansion, regenerated from its seed (None without one)."""
        if not self.expansion:
            return None
        return random_projection(self.dim, self.expansion, self.expansion_seed)

    def features(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings [n, D] -> x = [(z - mean) / std, 1] [n, D + 1] float64, or with an
        expansion [max(((z - mean) / std) P, 0), 1] [n, B + 1]."""
        z = np.asarray(embeddings, dtype=np.float64).reshape(-1, self.dim)
        s = (z - self.mean) / self.std
        projection = self.projection()
        if projection is not None:
            s = np.maximum(s @ projection, 0.0)
        return np.hstack([s, np.ones((len(z), 1))])

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores [n, C] of embeddings [n, D]."""
        scores: np.ndarray = self.features(embeddings) @ self.w
        return scores

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(A [D, C], b [C]) with logits = z A + b: the standardisation folded into the head, for a
        device graph that takes the raw embedding. A head with an expansion is not linear in z:
        refused."""
        if self.expansion:
            raise EdgeclError(f"analytic head: a head with a random expansion (B {self.expansion})"
                              f" is not one linear map of the embedding; it cannot be folded")
        a = self.w[:-1] / self.std[:, None]
        return a, self.w[-1] - self.mean @ a

    def balanced_weight(self, label: str, n_new: int) -> float:
        """The weight of each of `n_new` clips of `label` learnt together (module doc); 1 when the
        weighting is off or no other class holds clips."""
        others = [n for name, n in zip(self.labels, self.clips, strict=True) if name != label and n > 0]
        if self.weighting == "off" or not others:
            return 1.0
        held = self.clips[self.labels.index(label)] if label in self.labels else 0
        return class_weight(float(np.mean(others)) / (held + n_new), self.weighting)

    def learn(self, embeddings: np.ndarray, label: str,
              weights: np.ndarray | float | None = None) -> np.ndarray:
        """Add clips of `label` (a new class gets a new column); returns their weights (record
        them to forget the clips later). `weights` None: the head's weighting."""
        z = np.asarray(embeddings, dtype=np.float64).reshape(-1, self.dim)
        if weights is None:
            weights = self.balanced_weight(label, len(z))
        weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(z),)).copy()
        if not np.all(weights > 0):
            raise EdgeclError("analytic head: clip weights must be positive")
        if label not in self.labels:
            self.labels.append(label)
            self.clips.append(0)
            self.mass.append(0.0)
            self.w = np.hstack([self.w, np.zeros((len(self.w), 1))])
        self._update(z, self.labels.index(label), weights)
        return weights

    def forget(self, embeddings: np.ndarray, label: str, weights: np.ndarray | float) -> None:
        """Remove clips of `label` learnt with `weights` (the exact downdate); a class left with
        no clip is removed with its column."""
        if label not in self.labels:
            raise EdgeclError(f"analytic head: no class {label!r} to forget")
        z = np.asarray(embeddings, dtype=np.float64).reshape(-1, self.dim)
        weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), (len(z),))
        column = self.labels.index(label)
        if len(z) > self.clips[column]:
            raise EdgeclError(f"analytic head: class {label!r} holds {self.clips[column]} clips, "
                              f"cannot forget {len(z)}")
        self._update(z, column, -weights)
        if self.clips[column] == 0:
            del self.labels[column], self.clips[column], self.mass[column]
            self.w = np.delete(self.w, column, axis=1)

    def _update(self, embeddings: np.ndarray, column: int, weights: np.ndarray) -> None:
        """Woodbury: R' = R - R X^T (L^-1 + X R X^T)^-1 X R, or for more clips than features the
        same R' = (I + R X^T L X)^-1 R (a d x d solve, not n x n); W' = W + R' X^T L (Y - X W);
        negative weights remove clips."""
        if len(embeddings) == 0:
            return
        x = self.features(embeddings)
        if len(x) > len(self.r):  # more clips than features: solve in the d x d form
            gram = x.T @ (weights[:, None] * x)
            r = np.linalg.solve(np.eye(len(self.r)) + self.r @ gram, self.r)  # (R^-1 + G)^-1
        else:
            rx = self.r @ x.T
            inner = np.diag(1.0 / weights) + x @ rx
            r = self.r - rx @ np.linalg.solve(inner, rx.T)
        self.r = (r + r.T) / 2  # rounding breaks the symmetry; R is symmetric by definition
        y = np.zeros((len(x), self.w.shape[1]))
        y[:, column] = 1.0
        self.w = self.w + self.r @ (x.T @ (weights[:, None] * (y - x @ self.w)))
        self.clips[column] += int(np.sign(weights[0])) * len(x)
        self.mass[column] = float(self.mass[column] + weights.sum())

    def state_bytes(self, itemsize: int = 4) -> int:
        """Bytes of the state a device keeps at `itemsize` per number: packed R, W, mean, std,
        and the expansion's projection P (D x B) when there is one."""
        return state_bytes(self.dim, len(self.labels), self.expansion, itemsize)

    def update_macs(self, n_clips: int) -> int:
        """Multiply-adds of the recursive update for `n_clips` clips at the head's present class
        count: per clip the expansion's projection D B, R's rank-one step and W's, about
        D B + 2 d^2 + d C (d = n_features)."""
        d = self.n_features
        classes = int(self.w.shape[1])
        return n_clips * (self.dim * self.expansion + 2 * d * d + d * classes)


def state_bytes(dim: int, n_classes: int, expansion: int = 0, itemsize: int = 4) -> int:
    """Bytes of an analytic state for embedding width `dim`, `n_classes` classes and expansion
    width `expansion` (AnalyticHead.state_bytes): known before training, for a budget check."""
    d = (expansion or dim) + 1
    return itemsize * (d * (d + 1) // 2 + d * n_classes + 2 * dim + dim * expansion)


def class_weight(ratio: float, weighting: str) -> float:
    """The weight of a clip of a class holding `ratio` times fewer clips than the mean class."""
    if weighting == "off":
        return 1.0
    return float(ratio ** BOOST) if weighting == "boosted" else float(ratio)


def fit_head(embeddings: np.ndarray, labels: Sequence[str], *, gamma: float,
             weighting: str = "balanced", expansion: int = 0,
             expansion_seed: int = 0) -> tuple[AnalyticHead, np.ndarray]:
    """A head standardised on and fit to clips of several classes, one class at a time in order of
    first appearance (balanced: each class carries the mean class's mass; boosted: see the module
    doc); returns it with each clip's weight."""
    z = np.asarray(embeddings, dtype=np.float64)
    labels = [str(label) for label in labels]
    if len(z) != len(labels) or len(z) == 0:
        raise EdgeclError(f"analytic head: {len(z)} embeddings for {len(labels)} labels")
    head = AnalyticHead.standardised_on(z, gamma=gamma, weighting=weighting, expansion=expansion,
                                        expansion_seed=expansion_seed)
    names = list(dict.fromkeys(labels))
    counts = {name: labels.count(name) for name in names}
    mean_count = float(np.mean(list(counts.values())))
    weights = np.ones(len(z))
    for name in names:
        rows = [i for i, label in enumerate(labels) if label == name]
        weights[rows] = class_weight(mean_count / counts[name], weighting)
        head.learn(z[rows], name, weights[rows])
    return head, weights


def choose_gamma(embeddings: np.ndarray, labels: Sequence[str], *,
                 candidates: Sequence[float] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0),
                 holdout_share: float = 0.2, seed: int = 0, expansion: int = 0,
                 expansion_seed: int = 0) -> float:
    """The gamma of `candidates` whose head, fit on a random (1 - holdout_share) of the clips,
    classifies the rest best; among equally accurate ones (common: old classes are separable),
    the one with the lowest squared error on the held-out one-hot targets, the loss ridge
    regression minimises (too large a gamma shrinks every score towards the bias)."""
    z = np.asarray(embeddings, dtype=np.float64)
    names_of = np.asarray([str(label) for label in labels])
    order = np.random.default_rng(seed).permutation(len(z))
    n_held = max(1, int(round(holdout_share * len(z))))
    held, kept = order[:n_held], order[n_held:]
    scores = []
    for gamma in candidates:
        head, _ = fit_head(z[kept], list(names_of[kept]), gamma=gamma, weighting="off",
                           expansion=expansion, expansion_seed=expansion_seed)
        logits = head.logits(z[held])
        names = np.asarray(head.labels)
        accuracy = float(np.mean(names[np.argmax(logits, axis=1)] == names_of[held]))
        error = float(np.mean((logits - (names[None, :] == names_of[held][:, None])) ** 2))
        scores.append((-accuracy, error, float(gamma)))
    return min(scores)[2]
