"""How a grid shares GPUs among its trials.

A trial gets `gpus_per_trial` GPUs: by default one on a machine (or cluster) that has any, none
elsewhere; a fraction (0.5) lets that many trials share one GPU. A trial sees only its own GPUs
(CUDA_VISIBLE_DEVICES: Ray sets it from the GPUs it reserved, the local executor from the slot it
hands out), a trial without GPUs sees none, and every trial is told its device (`--device cuda`
or `--device cpu`), so none falls back to `auto` and lands on another trial's GPU. How many
trials run at once counts the GPUs as well as the CPUs.
"""

from __future__ import annotations

import math

from edgecl.errors import EdgeclError

VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


def local_gpu_count() -> int:
    """GPUs torch sees on this machine (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_gpus_per_trial(requested: float | None, gpus: float) -> float:
    """GPUs per trial: `requested`, or by default 1 when there are `gpus`, else 0. A request
    for more GPUs than there are is an error naming --gpus-per-trial."""
    if requested is None:
        return 1.0 if gpus >= 1 else 0.0
    if requested > 0 and requested > gpus:
        raise EdgeclError(f"--gpus-per-trial: {requested:g} GPU(s) per trial, but "
                          f"{'no GPU is' if not gpus else f'only {gpus:g} are'} available")
    return float(requested)


def trial_device(gpus_per_trial: float) -> str:
    """The `--device` every trial of the grid is given."""
    return "cuda" if gpus_per_trial > 0 else "cpu"


def gpu_capacity(gpus: float, gpus_per_trial: float) -> int | None:
    """Trials the GPUs hold at once (None: the trials use no GPU, only the CPUs count)."""
    if gpus_per_trial <= 0:
        return None
    return max(1, math.floor(gpus / gpus_per_trial + 1e-9))


def gpu_slots(gpus: int, gpus_per_trial: float) -> list[tuple[int, ...]]:
    """The GPU ids of each trial slot, round-robin over the GPUs: with 2 GPUs at 0.5 a trial,
    (0,), (1,), (0,), (1,); at 2 a trial with 4 GPUs, (0, 1), (2, 3). Empty without GPUs."""
    if gpus_per_trial <= 0:
        return []
    if gpus_per_trial >= 1:
        width = math.ceil(gpus_per_trial)
        return [tuple(range(i * width, (i + 1) * width)) for i in range(gpus // width)]
    return [(gpu,) for _ in range(gpu_capacity(1, gpus_per_trial)) for gpu in range(gpus)]


def visible_devices(ids) -> dict[str, str]:
    """The environment that shows a trial only GPUs `ids` (none when empty)."""
    return {VISIBLE_DEVICES: ",".join(str(int(i)) for i in ids)}
