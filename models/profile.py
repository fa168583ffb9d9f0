"""Parameter and MAC counts per clip for a SoundClassifier.

MACs (multiply-accumulates) are counted with forward hooks during one forward pass of a silent clip
(batch 1, eval mode):
- Conv1d/Conv2d: output elements x (in_channels / groups) x kernel size;
- Linear: output elements x in_features;
- front-end modules with a `count_macs(output)` method: the DFT conv (output elements x n_fft),
  the factored DFT's two grouped convs, and the mel MatMul (output elements x STFT bins).
Not counted: BatchNorm (folded into convolutions at export), activations, pooling, residual adds,
the power spectrum, the log, and the reductions (mean over frequency, global pooling). With the
torch.stft front end nothing is counted, with the rfft one only the mel MatMul (an FFT is not a
module; `edgecl bench frontend` adds an estimate).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from models.classifier import SoundClassifier

MacCounter = Callable[[nn.Module, torch.Tensor], int]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (front-end buffers are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one example through `module`, given its batched output; 0 for uncounted modules."""
    per_example = output[0].numel()
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        kernel = 1
        for size in module.kernel_size:
            kernel *= size
        return per_example * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return per_example * module.in_features
    counter = getattr(module, "count_macs", None)
    return int(counter(output)) if callable(counter) else 0


def hooked_macs(parts: dict[str, nn.Module], run: Callable[[], object]) -> dict[str, int]:
    """MACs per example of each part's modules (layer_macs) during `run()`, which must call them
    once at batch 1 in eval mode under no_grad: {part: MACs}."""
    totals = dict.fromkeys(parts, 0)
    handles = []

    def make_hook(part: str):
        def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            totals[part] += layer_macs(module, output)
        return hook

    for part, root in parts.items():
        for module in root.modules():
            handles.append(module.register_forward_hook(make_hook(part)))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return totals


def module_macs(module: nn.Module, n_samples: int) -> int:
    """MACs of `module` (e.g. a front end) on one silent clip of `n_samples` samples."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return hooked_macs({"module": module},
                               lambda: module(torch.zeros(1, n_samples)))["module"]
    finally:
        module.train(was_training)


def macs_breakdown(model: SoundClassifier, clip_samples: int) -> dict[str, int]:
    """MACs per clip of `clip_samples` samples: {frontend, backbone, head, total}."""
    parts = {"frontend": model.frontend, "backbone": model.backbone, "head": model.head}
    was_training = model.training
    model.eval()
    try:
        device = next(iter(model.buffers())).device
        with torch.no_grad():
            totals = hooked_macs(parts, lambda: model(torch.zeros(1, clip_samples, device=device)))
    finally:
        model.train(was_training)
    totals["total"] = sum(totals.values())
    return totals


def count_macs(model: SoundClassifier, clip_samples: int) -> int:
    """Total MACs per clip, front end included (see macs_breakdown for the parts)."""
    return macs_breakdown(model, clip_samples)["total"]
