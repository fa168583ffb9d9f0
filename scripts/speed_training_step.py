"""Training-step variants for docs/results/speed.md: one BC-ResNet-40 optimizer step on a
batch of 32 cached 44.1 kHz 5 s log-mels [32, 1, 64, 690], with the run's allocator settings,
in rounds that alternate between the variants in one process; best ms per clip after a warm-up
round, and the ratio to today's step.

    python scripts/speed_training_step.py THREADS ROUNDS [--compile]   (from the repository root)
    python scripts/speed_training_step.py THREADS ROUNDS --profile   (torch.profiler of today's
                                                                        step, by operator)

Variants (each computes the same function; float rounding differs):
- today: NCHW, SubSpectralNorm as reshape + BatchNorm2d (models.bcresnet);
- channels_last: the model and the batch in channels-last memory format;
- ssn_manual: SubSpectralNorm from var_mean over a 5-D view (no reshape copies);
- dw_shift_add: the frequency depthwise 3x1 conv as three shifted multiply-adds;
- recal_forward: the BatchNorm recalibration's forward pass (train mode, no grad) over the same
  32 clips, to size its share of an epoch;
- compiled (--compile): torch.compile of the forward pass; prints its compile time.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecl.allocator import keep_freed_memory
from models import bcresnet, build_model
from models.frontend import FrontEndConfig


def _ssn_manual(self, x):
    bn, (_, channels, n_freq, _) = self.bn, x.shape
    bands = self.sub_bands
    view = x.unflatten(2, (bands, n_freq // bands))
    shape = (1, channels, bands, 1, 1)
    var, mean = torch.var_mean(view, dim=(0, 3, 4), keepdim=True, correction=0)
    with torch.no_grad():
        count = view.numel() / (channels * bands)
        bn.running_mean.lerp_(mean.flatten(), bn.momentum)
        bn.running_var.lerp_(var.flatten() * count / (count - 1), bn.momentum)
    scale = bn.weight.view(shape) * torch.rsqrt(var + bn.eps)
    return (view * scale + (bn.bias.view(shape) - mean * scale)).flatten(2, 3)


def _dw_shift_add(self, x):
    weight = self.conv.weight.view(1, -1, 3, 1, 1)
    padded = F.pad(x, (0, 0, 1, 1))
    out = (padded[:, :, :-2] * weight[:, :, 0] + padded[:, :, 1:-1] * weight[:, :, 1]
           + padded[:, :, 2:] * weight[:, :, 2])
    return self.norm(out)


_PATCHES = {"ssn_manual": (bcresnet.SubSpectralNorm, _ssn_manual),
            "dw_shift_add": (bcresnet._FrequencyBranch, _dw_shift_add)}


def _step(model, batch, targets, name):
    model = copy.deepcopy(model).train()
    if name == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)
    if name == "recal_forward":
        def recal():
            with torch.no_grad():
                model.forward_features(batch)
        return recal
    forward = model.forward_features
    if name == "compiled":
        forward = torch.compile(forward)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)

    def step():
        owner, patched = _PATCHES.get(name, (None, None))
        original = owner.forward if owner else None
        if owner:
            owner.forward = patched
        try:
            logits, _ = forward(batch)
            loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        finally:
            if owner:
                owner.forward = original
    return step


def profile(step, rounds: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    step()  # warm-up
    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main(threads: int, rounds: int, compiled: bool, profiled: bool = False) -> None:
    keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("bc-resnet", 20, FrontEndConfig.for_sample_rate(44100))
    batch, targets = torch.randn(32, 1, 64, 690), torch.randint(0, 20, (32,))
    if profiled:
        profile(_step(model, batch, targets, "today"), rounds)
        return
    names = ["today", "channels_last", "ssn_manual", "dw_shift_add", "recal_forward"]
    if compiled:
        names.append("compiled")
    steps = {name: _step(model, batch, targets, name) for name in names}
    best: dict[str, float] = {}
    for round_ in range(rounds + 1):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            seconds = time.perf_counter() - started
            if round_ == 0 and name == "compiled":
                print(f"compiled: first step (compile included) {seconds:.1f} s")
            if round_:  # round 0 warms up
                best[name] = min(best.get(name, float("inf")), seconds)
    for name, seconds in best.items():
        print(f"{name:14s} {1000 * seconds / len(batch):7.1f} ms per clip, "
              f"today / this {best['today'] / seconds:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), "--compile" in sys.argv[3:], "--profile" in sys.argv[3:])
