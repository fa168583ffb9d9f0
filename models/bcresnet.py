"""BC-ResNet-Mod backbone: log-mel [B, 1, F, T] -> embedding [B, 2.5 * width].

Broadcasted residual learning (Kim et al., Interspeech 2021) in the variant of the DCASE 2021 task 1a
submission (Kim et al., "Domain generalization on efficient acoustic scene classification using
residual normalization"), the one the continual-learning baselines for sound classification use:

    conv 5x5 stride 2 (1 -> 2w)
    transition(2w -> w), broadcasted(w), max-pool 2
    transition(w -> 1.5w), broadcasted(1.5w), max-pool 2
    transition(1.5w -> 2w), broadcasted(2w)
    transition(2w -> 2.5w), broadcasted(2.5w) x 2
    global average pooling -> embedding

The published network ends with a 1x1 conv to the classes followed by global average pooling;
both are linear, so pooling first and applying a Linear head (models.head) computes the same
function and gives the embedding the continual-learning methods need. Base width 40 gives 84,800
backbone parameters (85,810 with a 10-class head, 89,850 with 50 classes).

Axis 2 is frequency and axis 3 is time, as in the BC-ResNet paper: SubSpectralNorm splits the
frequency axis into sub-bands, so the mel count must be a multiple of 2 * 2 * 2 * SUB_BANDS.
Residual normalisation (instance norm on the input) is left out: it targets device mismatch.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecl.errors import EdgeclError
from models import BC_RESNET_N_MELS_MULTIPLE
from models.checkpointing import run_layers

SUB_BANDS = 4
CHANNEL_DROPOUT = 0.1
# Frequency is halved by the stem and by two max-pools before the last SubSpectralNorm.
FREQ_DOWNSAMPLING = 8
N_MELS_MULTIPLE = FREQ_DOWNSAMPLING * SUB_BANDS  # the input's bins split evenly at every stage
assert N_MELS_MULTIPLE == BC_RESNET_N_MELS_MULTIPLE  # the torch-free copy the option check uses


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics for each of `sub_bands` equal frequency bands."""

    def __init__(self, channels: int, sub_bands: int = SUB_BANDS) -> None:
        super().__init__()
        self.channels = channels
        self.sub_bands = sub_bands
        self.bn = nn.BatchNorm2d(channels * sub_bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_freq = x.shape[2]
        # Fold each sub-band into the channel axis; batch and time stay symbolic (-1) for export.
        folded = x.reshape(x.shape[0], self.channels * self.sub_bands, n_freq // self.sub_bands, -1)
        return self.bn(folded).reshape(x.shape[0], self.channels, n_freq, -1)


class _TemporalBranch(nn.Module):
    """f1: temporal depthwise conv + BN + Swish + pointwise conv + channel dropout on [B, C, 1, T]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.Dropout2d(CHANNEL_DROPOUT),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _FrequencyBranch(nn.Module):
    """f2: frequency depthwise conv (3x1) + SubSpectralNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), groups=channels, bias=False)
        self.norm = SubSpectralNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class BroadcastedBlock(nn.Module):
    """y = ReLU(x + f2(x) + broadcast(f1(mean_freq(f2(x)))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.frequency = _FrequencyBranch(channels)
        self.temporal = _TemporalBranch(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectral = self.frequency(x)
        temporal = self.temporal(spectral.mean(dim=2, keepdim=True))
        return torch.relu(x + spectral + temporal)


class TransitionBlock(nn.Module):
    """Channel-changing block: 1x1 conv + BN + ReLU first, no identity path."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )
        self.frequency = _FrequencyBranch(out_channels)
        self.temporal = _TemporalBranch(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectral = self.frequency(self.expand(x))
        temporal = self.temporal(spectral.mean(dim=2, keepdim=True))
        return torch.relu(spectral + temporal)


def stage_widths(width: int) -> tuple[int, int, int, int, int]:
    """Channels of (stem, stage 1, stage 2, stage 3, stage 4) for a base width."""
    return 2 * width, width, round(1.5 * width), 2 * width, round(2.5 * width)


class BCResNetMod(nn.Module):
    """BC-ResNet-Mod backbone returning the pooled embedding; `embedding_dim` = 2.5 * width.

    `checkpoint_blocks` (off by default, not part of the weights): training recomputes each
    block's activations in backward instead of keeping them (models.checkpointing), same result.
    """

    arch_name = "bc-resnet"

    def __init__(self, width: int = 40, n_mels: int = 64) -> None:
        super().__init__()
        if width < 2:
            raise EdgeclError(f"bc-resnet: width must be an integer >= 2, got {width}")
        if n_mels % N_MELS_MULTIPLE:
            raise EdgeclError(f"--n-mels: bc-resnet needs a multiple of {N_MELS_MULTIPLE} for "
                              f"SubSpectralNorm, got {n_mels}")
        self.width = width
        self.checkpoint_blocks = False
        # Blocks that run checkpointed (and that the host memory estimate treats as such).
        self.checkpointable_blocks = (TransitionBlock, BroadcastedBlock)
        stem, c1, c2, c3, c4 = stage_widths(width)
        self.embedding_dim = c4
        self.layers = nn.Sequential(
            nn.Conv2d(1, stem, 5, stride=2, padding=2),
            TransitionBlock(stem, c1), BroadcastedBlock(c1),
            nn.MaxPool2d(2),
            TransitionBlock(c1, c2), BroadcastedBlock(c2),
            nn.MaxPool2d(2),
            TransitionBlock(c2, c3), BroadcastedBlock(c3),
            TransitionBlock(c3, c4), BroadcastedBlock(c4), BroadcastedBlock(c4),
        )

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        features = run_layers(self.layers, logmel, self.checkpoint_blocks,
                              self.checkpointable_blocks)
        return features.mean(dim=(2, 3))
