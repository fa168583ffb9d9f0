"""SoundClassifier: front end + backbone + classifier head, one interface for every network."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.frontend import LogMelFrontEnd
from models.head import ClassifierHead


class SoundClassifier(nn.Module):
    """waveform [B, T] -> (logits [B, C], embedding [B, D]).

    `backbone` maps log-mel [B, 1, F, T'] to the embedding and has `embedding_dim`, `arch_name`
    and (for width-scaled networks) `width`.
    """

    def __init__(self, frontend: LogMelFrontEnd, backbone: nn.Module, head: ClassifierHead) -> None:
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.head = head
        self.embedding_dim: int = backbone.embedding_dim

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_features(self.frontend(waveform))

    def forward_features(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel [B, 1, F, T'] -> (logits, embedding); training runs on cached features."""
        embedding = self.backbone(logmel)
        return self.head(embedding), embedding

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, 1, F, T'] -> embedding [B, D]."""
        return self.backbone(logmel)

    def model_config(self) -> dict[str, Any]:
        """Everything models.rebuild needs to recreate this architecture (weights excluded)."""
        return {
            "name": self.backbone.arch_name,
            "width": getattr(self.backbone, "width", None),
            "n_classes": self.head.n_classes,
            "frontend": self.frontend.config.to_dict(),
        }


class LogitsOnly(nn.Module):
    """Waveform in, logits out: the single-output graph that goes to ONNX, for a model returning
    logits or (logits, embedding, ...)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        output = self.model(waveform)
        return output[0] if isinstance(output, (tuple, list)) else output
