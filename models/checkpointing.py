"""Activation checkpointing for a network's blocks: keep each block's input, recompute its inside
during backward.

A training step then holds one block's saved activations at a time instead of every block's, for
one extra forward of each block. Two things must not change for the result to stay the same:
- BatchNorm running statistics: the recomputation runs each BatchNorm again in training mode,
  which would update the running mean and variance (and the batch count) a second time. The
  recomputation must run the same ops as the forward (checkpoint compares what both saved), so it
  does update them, and the values the forward left are put back when it ends.
- Dropout masks: torch's checkpoint restores the RNG state before recomputing
  (preserve_rng_state), so the recomputed block draws the masks of the original forward, and the
  global RNG stream continues as if nothing were recomputed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def running_statistics_kept(module: nn.Module) -> Iterator[None]:
    """The block's BatchNorm running statistics and batch counts as they were before the block:
    the recomputation updates them again (it must run the same ops, or checkpoint refuses the
    mismatch), and this puts the values of the original forward back."""
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    kept = [[buffer.clone() for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)]
            for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, (mean, var, count) in zip(norms, kept, strict=True):
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
                norm.num_batches_tracked.copy_(count)


def checkpointed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """block(x), its activations recomputed in backward rather than kept."""
    return checkpoint(block, x, use_reentrant=False, preserve_rng_state=True,
                      context_fn=lambda: (contextlib.nullcontext(),
                                          running_statistics_kept(block)))


def run_layers(layers: nn.Sequential, x: torch.Tensor, checkpoint_blocks: bool,
               is_block: type | tuple[type, ...]) -> torch.Tensor:
    """Apply `layers` in order; when `checkpoint_blocks` and a gradient is being recorded in
    training mode, every layer of type `is_block` runs checkpointed."""
    if not (checkpoint_blocks and layers.training and torch.is_grad_enabled()):
        return layers(x)
    for layer in layers:
        x = checkpointed(layer, x) if isinstance(layer, is_block) else layer(x)
    return x
