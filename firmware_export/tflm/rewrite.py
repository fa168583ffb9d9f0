"""The phase model as the graph TFLM runs: log-mel in, logits out, with two rewrites that keep the
float function and make the int8 build accurate.

SubSpectralNorm (a BatchNorm with its own statistics per frequency band, computed behind a
reshape that folds the bands into the channel axis) is folded into the depthwise 3x1 convolution
that feeds it: one depthwise conv per band, its weights scaled and its bias set by that band's
norm, run on the band's rows plus one row of zero padding either side and concatenated along
frequency. In the plain multiply-add form the quantizer gives the conv output one scale for every
band, and bands with a small range are rounded away before the norm amplifies them (an early
probe: 94.7% top-1 agreement instead of 97.7%).

The front end's reflect padding is not in this graph (the log-mel runs in C or numpy on the host
side of the model, firmware_export.device.logmel); there it is a fixed-index gather
(`reflect_indices`), as TFLM has no SELECT op.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from models.bcresnet import SubSpectralNorm, _FrequencyBranch


class BandedFrequencyConv(nn.Module):
    """A depthwise 3x1 conv followed by SubSpectralNorm (eval statistics), as one depthwise conv
    per frequency band with the norm folded into its weights and bias."""

    def __init__(self, conv: nn.Conv2d, norm: SubSpectralNorm) -> None:
        super().__init__()
        if conv.kernel_size != (3, 1) or conv.padding != (1, 0) or conv.groups != conv.in_channels:
            raise ValueError("BandedFrequencyConv expects a depthwise 3x1 conv with padding (1, 0)")
        bn = norm.bn
        channels, bands = norm.channels, norm.sub_bands
        scale = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
        shift = bn.bias.detach() - bn.running_mean.detach() * scale
        # BatchNorm channel c * bands + b is band b of channel c (the reshape's order).
        scale, shift = scale.reshape(channels, bands), shift.reshape(channels, bands)
        weight = conv.weight.detach()  # [C, 1, 3, 1]
        self.bands = bands
        self.channels = channels
        self.register_buffer("weights", torch.stack(
            [weight * scale[:, b].reshape(-1, 1, 1, 1) for b in range(bands)]))
        self.register_buffer("biases", shift.t().contiguous())  # [bands, C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        band_rows = x.shape[2] // self.bands
        padded = F.pad(x, (0, 0, 1, 1))
        parts = [F.conv2d(padded[:, :, b * band_rows: (b + 1) * band_rows + 2],
                          self.weights[b], self.biases[b], groups=self.channels)
                 for b in range(self.bands)]
        return torch.cat(parts, dim=2)


class LogmelClassifier(nn.Module):
    """log-mel [1, 1, n_mels, frames] -> logits [1, classes]: a SoundClassifier without its front
    end."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.head

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(logmel))


class LogmelEmbedding(nn.Module):
    """log-mel [1, 1, n_mels, frames] -> embedding [1, D]: the classifier without its front end
    and its head (the device runs a float head on it: the learnt one, firmware_export.device)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.backbone(logmel)


def fold_subspectral_norms(module: nn.Module) -> int:
    """Replace every frequency branch (depthwise conv + SubSpectralNorm) inside `module` by a
    BandedFrequencyConv, in place; returns how many were replaced."""
    replaced = 0
    for child in module.modules():
        if isinstance(child, _FrequencyBranch) and isinstance(child.norm, SubSpectralNorm):
            child.conv = BandedFrequencyConv(child.conv, child.norm)
            child.norm = nn.Identity()
            replaced += 1
    return replaced


def tflm_graph(model: nn.Module, fold_norms: bool = True, head: bool = True) -> nn.Module:
    """A copy of `model` (a SoundClassifier) as the TFLM graph: no front end, norms folded (unless
    `fold_norms` is False: the plain form, for measuring the difference), eval mode; without
    `head` it ends at the embedding."""
    wrapper = LogmelClassifier if head else LogmelEmbedding
    graph = wrapper(copy.deepcopy(model)).eval()
    if fold_norms:
        fold_subspectral_norms(graph)
    return graph
