"""How a phase's training clips are drawn into batches, issue 14.

`uniform` (the published rule): every epoch is one random permutation of the training set (new
clips plus the replayed exemplars), so each clip is seen once an epoch and a class is seen in
proportion to its clips. At a small memory that starves the old classes: at memory 50 on FSDD a
phase trains on about 480 new clips of 2 classes and 50 exemplars of up to 8, so a batch of 32
holds about 3 replayed clips, and the classifier and the features are pulled toward the newest
classes.

`class-balanced`: every epoch draws as many clips as the set holds, with replacement, each clip
with probability 1 / (number of clips of its class x classes), so every seen class fills the
same share of every batch in expectation (replayed exemplars are repeated, new clips subsampled).
Steps and MACs per epoch are those of `uniform`: the option costs no compute. BatchNorm's
statistics are re-estimated on a draw of the same kind (edgecl.training.loop.fit), so the
statistics the network is evaluated with match the batches it was trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on use: the CLI reads BATCH_SAMPLINGS without it
    import torch

BATCH_SAMPLINGS = ("uniform", "class-balanced")


def epoch_order(targets: torch.Tensor, sampling: str, generator: torch.Generator,
                count: int | None = None) -> torch.Tensor:
    """Indices into `targets` for one epoch (`count` of them; default: as many as there are
    clips): a permutation (`uniform`) or a class-balanced draw with replacement."""
    import torch

    n = len(targets)
    count = n if count is None else count
    if sampling == "uniform":
        return torch.randperm(n, generator=generator)[:count]
    if sampling != "class-balanced":
        raise ValueError(f"unknown batch sampling {sampling!r}")
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    per_class = torch.bincount(targets)
    weights = 1.0 / per_class[targets].double()
    return torch.multinomial(weights, count, replacement=True, generator=generator)
