"""Classifier head: a Linear layer on the embedding that can grow to more classes."""

from __future__ import annotations

import torch
from torch import nn

from edgecl.errors import EdgeclError


class ClassifierHead(nn.Module):
    """embedding [B, in_features] -> logits [B, n_classes]; `grow` appends output rows.

    Growth replaces the Linear module (and so its Parameter objects): build the optimizer after
    growing, as the trainer does at the start of each phase.
    """

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        if in_features < 1 or n_classes < 1:
            raise EdgeclError(f"classifier head: in_features and n_classes must be >= 1, got "
                              f"{in_features} and {n_classes}")
        self.fc = nn.Linear(in_features, n_classes)

    @property
    def in_features(self) -> int:
        return self.fc.in_features

    @property
    def n_classes(self) -> int:
        return self.fc.out_features

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.fc(embedding)

    def grow(self, n_classes: int) -> None:
        """Grow to `n_classes` outputs; old rows are copied exactly, new rows get nn.Linear's init."""
        if n_classes < self.n_classes:
            raise EdgeclError(f"classifier head: cannot shrink from {self.n_classes} to {n_classes} "
                              f"classes")
        if n_classes == self.n_classes:
            return
        old = self.fc
        grown = nn.Linear(old.in_features, n_classes, device=old.weight.device,
                          dtype=old.weight.dtype)
        with torch.no_grad():
            grown.weight[: old.out_features].copy_(old.weight)
            grown.bias[: old.out_features].copy_(old.bias)
        grown.train(old.training)
        self.fc = grown
