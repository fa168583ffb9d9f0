"""How a phase's training clips are drawn into batches.

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

`class-balanced` costs the new classes their plasticity where they have few clips: on the
synthetic default at memory 50 (72 clips a class) the last phase's 2 new classes get a fifth of
each batch, each new clip is drawn about 3 times in 10 epochs instead of 10, and the newest task
ends at 0.28-0.53 against 0.65-0.90 with uniform batches. Two draws in between, both with
replacement and at the same steps (Kang et al. 2020, "Decoupling representation and classifier
for long-tailed recognition"):

`square-root`: a class's share is proportional to the square root of its clips (uniform is
proportional to the clips, class-balanced to 1).

`progressive`: the share moves linearly from uniform in the first epoch to class-balanced in the
last, so the new classes are learnt before the old ones are given back their share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on use: the CLI reads BATCH_SAMPLINGS without it
    import torch

BATCH_SAMPLINGS = ("uniform", "class-balanced", "square-root", "progressive")


def epoch_order(targets: torch.Tensor, sampling: str, generator: torch.Generator,
                count: int | None = None, epoch: int = 0, epochs: int = 1) -> torch.Tensor:
    """Indices into `targets` for epoch `epoch` of `epochs` (`count` of them; default: as many
    as there are clips): a permutation (`uniform`) or a draw with replacement whose class shares
    `sampling` sets (module docstring). The draw is made on the CPU, where `generator` lives
    (the same indices on every device; CPU indices may index device tensors)."""
    import torch

    targets = targets.cpu()
    n = len(targets)
    count = n if count is None else count
    if sampling == "uniform":
        return torch.randperm(n, generator=generator)[:count]
    if sampling not in BATCH_SAMPLINGS:
        raise ValueError(f"unknown batch sampling {sampling!r}")
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    clips_of_class = torch.bincount(targets)[targets].double()  # per clip: its class's clips
    if sampling == "class-balanced":
        weights = 1.0 / clips_of_class
    elif sampling == "square-root":
        weights = clips_of_class.rsqrt()
    else:  # progressive: the class-balanced draw's share grows from 0 to 1 over the epochs
        balanced = 1.0 / clips_of_class
        toward = epoch / max(epochs - 1, 1)
        weights = (1.0 - toward) / n + toward * balanced / balanced.sum()
    return torch.multinomial(weights, count, replacement=True, generator=generator)
