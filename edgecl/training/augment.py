"""Augmentation of a training batch of log-mel features.

With class-balanced batches (edgecl.training.batch_sampling) at a small memory, each old class is
a handful of exemplars seen dozens of times an epoch: the network can memorise them. `specaugment`
(Park et al. 2019) masks, per clip, one band of mel bins and one span of frames (each up to an
eighth of the axis, at a random place, filled with the clip's mean), so every repetition of an
exemplar is a slightly different view. It costs no MACs worth counting and stores nothing; the
teacher of distillation sees the same masked batch. Validation, BatchNorm recalibration and the
memory update see the clips unmasked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on use: the CLI reads AUGMENTS without it
    import torch

AUGMENTS = ("none", "specaugment")
MAX_MASK_SHARE = 0.125  # of the mel bins, and of the frames


def _band(size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """[count, size] bool: per row one span of 0 to size * MAX_MASK_SHARE positions."""
    import torch

    widths = (torch.rand(count, generator=generator) * (size * MAX_MASK_SHARE + 1)).long()
    starts = (torch.rand(count, generator=generator) * (size - widths + 1)).long()
    positions = torch.arange(size).unsqueeze(0)
    return (positions >= starts.unsqueeze(1)) & (positions < (starts + widths).unsqueeze(1))


def augment(batch: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """`batch` [B, 1, F, T] augmented by `kind` (a new tensor; `none` returns it unchanged).
    The mask is drawn on the CPU by `generator` (the same masks on every device), then moved to
    the batch's device."""
    if kind == "none":
        return batch
    if kind != "specaugment":
        raise ValueError(f"unknown augmentation {kind!r}")
    n, _, n_mels, n_frames = batch.shape
    masked = (_band(n_mels, n, generator)[:, None, :, None]
              | _band(n_frames, n, generator)[:, None, None, :]).to(batch.device)
    fill = batch.mean(dim=(1, 2, 3), keepdim=True).expand_as(batch)
    return batch.masked_fill(masked, 0.0) + fill * masked
