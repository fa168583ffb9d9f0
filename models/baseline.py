"""Baseline CNN backbone: log-mel [B, 1, F, T] -> 32-dim embedding.

Four blocks of 3x3 conv + BatchNorm + ReLU + 2x2 max-pool with 16, 32, 64 and 128 channels, global
average pooling, then a 32-unit Linear + ReLU embedding. Four pools need at least 16 mel bins and
16 frames.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

CHANNELS = (16, 32, 64, 128)
EMBEDDING_DIM = 32


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (bias folded into BN) + BN + ReLU + 2x2 max-pool."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class BaselineCNN(nn.Module):
    """The baseline backbone; `embedding_dim` = 32."""

    arch_name = "baseline"

    def __init__(self) -> None:
        super().__init__()
        widths = (1, *CHANNELS)
        self.blocks = nn.Sequential(*(conv_block(a, b) for a, b in itertools.pairwise(widths)))
        self.embedding = nn.Sequential(nn.Linear(CHANNELS[-1], EMBEDDING_DIM), nn.ReLU())
        self.embedding_dim = EMBEDDING_DIM

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.blocks(logmel).mean(dim=(2, 3)))
