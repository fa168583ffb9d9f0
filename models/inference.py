"""An eval-only copy of a backbone for fast embedding passes (the memory update's samplers).

`inference_copy(backbone)` returns a frozen copy that computes the same function as the
backbone in eval mode, with less memory traffic:
- every BatchNorm right after a convolution in an nn.Sequential is folded into that convolution
  (its weights scaled, a bias added) and replaced by Identity;
- every SubSpectralNorm becomes one per-(channel, frequency) scale and shift (no reshape);
- the copy runs in channels-last memory format (`embed` converts its input), which PyTorch's CPU
  convolutions run faster for these shapes.
The results match the reference path within float rounding (tests/test_models.py checks it).
The trained model is untouched: a copy is made per memory update, after training.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing norm(conv(x)) with `norm`'s running statistics (eval mode).
    Built by copying `conv` (torch.nn.utils.fusion), never by constructing a new layer: a new
    layer's initialisation would draw from the global torch RNG and shift the dropout masks of
    all later training."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    return fuse_conv_bn_eval(conv.eval(), norm.eval())


class SubBandAffine(nn.Module):
    """An eval-mode SubSpectralNorm as x * scale + shift, with scale and shift [1, C, F, 1]
    expanded from the per-(channel, sub-band) statistics for inputs of `n_freq` bins."""

    def __init__(self, norm: nn.Module, n_freq: int) -> None:
        super().__init__()
        bn = norm.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        per_band = n_freq // norm.sub_bands

        def expand(values: torch.Tensor) -> torch.Tensor:
            # BatchNorm channel c * sub_bands + b normalises channel c, band b (SubSpectralNorm's
            # fold of the frequency axis into the channels).
            bands = values.detach().reshape(norm.channels, norm.sub_bands)
            return bands.repeat_interleave(per_band, dim=1).reshape(1, norm.channels, n_freq, 1)

        self.register_buffer("scale", expand(scale))
        self.register_buffer("shift", expand(shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


def _fold_sequential(module: nn.Module) -> None:
    for child in module.children():
        _fold_sequential(child)
    if not isinstance(module, nn.Sequential):
        return
    for i in range(len(module) - 1):
        conv, norm = module[i], module[i + 1]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            module[i] = fold_batchnorm(conv, norm)
            module[i + 1] = nn.Identity()


def _sub_band_norms(backbone: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Frequency bins reaching each SubSpectralNorm (by module name) for `example`'s shape."""
    from models.bcresnet import SubSpectralNorm

    sizes: dict[str, int] = {}
    handles = [module.register_forward_pre_hook(
        lambda _m, inputs, name=name: sizes.__setitem__(name, int(inputs[0].shape[2])))
        for name, module in backbone.named_modules() if isinstance(module, SubSpectralNorm)]
    try:
        with torch.no_grad():
            backbone(example)
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


class InferenceBackbone(nn.Module):
    """log-mel [B, 1, F, T] -> embedding, an eval-only copy of a backbone (see the module doc)."""

    def __init__(self, backbone: nn.Module, n_mels: int) -> None:
        super().__init__()
        model = copy.deepcopy(backbone).eval()
        for module in model.modules():  # hooks on the original (MAC counters) stay there
            module._forward_pre_hooks.clear()
            module._forward_hooks.clear()
        sizes = _sub_band_norms(model, torch.zeros(1, 1, n_mels, 16,
                                                   device=next(model.parameters()).device))
        for name, n_freq in sizes.items():
            _replace(model, name, SubBandAffine(model.get_submodule(name), n_freq))
        _fold_sequential(model)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.backbone = model.to(memory_format=torch.channels_last)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.backbone(logmel.contiguous(memory_format=torch.channels_last))


def inference_copy(backbone: nn.Module, n_mels: int) -> InferenceBackbone:
    """An eval-only copy of `backbone` for log-mels of `n_mels` bins."""
    return InferenceBackbone(backbone, n_mels)


class InferenceEmbedder:
    """`embedder(logmel) -> embedding` through an inference copy of `model`'s backbone, made on
    the first call (so the copy has the weights of that moment: build one per memory update).
    `on_batch(n)` is told each batch's size (the memory update counts backbone MACs with it)."""

    def __init__(self, model: nn.Module, on_batch=None) -> None:
        self.model, self.on_batch = model, on_batch
        self._copy: InferenceBackbone | None = None

    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:
        if self._copy is None:
            self._copy = inference_copy(self.model.backbone, int(logmel.shape[2]))
        if self.on_batch is not None:
            self.on_batch(int(logmel.shape[0]))
        with torch.no_grad():
            return self._copy(logmel)
