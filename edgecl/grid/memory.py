"""How a grid shares the machine's memory among its trials.

Each trial's peak RSS is estimated before it starts (edgecl.budget.host_ram, from its model,
width, mels, rate, clip length, batch and checkpointing, and its data's clip count), and the
runner starts a trial only while the estimates of the running trials and its own fit the grid's
memory: the machine's available memory on a local run, Ray's memory resource on a cluster (where
each task also reserves its estimate, so Ray places it on a node that has it). The number of
trials at once is so bounded by RAM as well as by cores and GPUs.

Estimates are cached per distinct configuration: a 375-trial grid has a handful.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from edgecl.errors import EdgeclError

# A fresh `edgecl train` process before its first step: the interpreter, torch, onnxruntime and
# the run's code (peak RSS of the calibration's processes before training,
# scripts/calibrate_host_ram.py: 0.69-0.81 GB).
TRIAL_BASELINE_BYTES = 800 * 2**20
# What the grid leaves to everything else on a machine whose available memory it reads.
HEADROOM = 0.9


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is no such file)."""
    from edgecl.budget.ram import proc_kib_field

    return proc_kib_field("/proc/meminfo", "MemAvailable")


def local_memory_limit() -> int | None:
    """What a grid on this machine lets its trials' estimates add up to (None: unknown)."""
    available = available_memory_bytes()
    return None if available is None else int(available * HEADROOM)


@dataclass(frozen=True)
class TrialShape:
    """What a trial's training memory depends on."""

    model: str
    width: int
    n_mels: int
    sample_rate: int
    clip_seconds: float
    batch_size: int
    checkpointing: bool
    n_clips: int
    returns_memory: bool = False


def trial_shape(options: dict[str, Any], data_root: str | None = None) -> TrialShape:
    """The shape of a trial from its train options (defaults from RunConfig and the dataset)."""
    from edgecl.config import RunConfig
    from edgecl.data import canonical_name

    defaults = RunConfig.__dataclass_fields__
    get = lambda name: options.get(name, defaults[name].default)  # noqa: E731
    rate, seconds, n_clips = dataset_facts(canonical_name(get("dataset")),
                                           options.get("data_root", data_root),
                                           get("sample_rate"), get("clip_seconds"))
    return TrialShape(model=get("model"), width=get("width"), n_mels=get("n_mels"),
                      sample_rate=int(rate), clip_seconds=float(seconds),
                      batch_size=get("batch_size"),
                      checkpointing=get("activation_checkpointing") in ("on", "lean"),
                      n_clips=n_clips,
                      returns_memory=get("activation_checkpointing") == "lean")


@functools.cache
def dataset_facts(dataset: str, root: str | None, sample_rate: int | None,
                  clip_seconds: float | None) -> tuple[int, float, int]:
    """(sample rate, clip seconds, clips) of a dataset as a run would load it: read once per
    dataset, root and overrides, not once per trial (a grid has hundreds of trials)."""
    from edgecl.data import load_dataset, synthetic

    if dataset == synthetic.NAME:  # known without generating it
        return (sample_rate or synthetic.SAMPLE_RATE, clip_seconds or synthetic.CLIP_SECONDS,
                len(synthetic.CLASSES) * synthetic.CLIPS_PER_CLASS)
    split = load_dataset(dataset, root, sample_rate=sample_rate, clip_seconds=clip_seconds)
    return split.sample_rate, split.clip_seconds, len(split.train) + len(split.test)


def shape_estimate(shape: TrialShape) -> int:
    """Estimated peak RSS of a trial of this shape, in bytes."""
    import torch

    from edgecl.allocator import trains_under_caching_allocator
    from edgecl.budget.host_ram import estimate_host_train_ram
    from models import build_model
    from models.frontend import FrontEndConfig

    frontend = FrontEndConfig.for_sample_rate(shape.sample_rate, n_mels=shape.n_mels)
    model = build_model(shape.model, 2, frontend, width=shape.width)
    samples = round(shape.sample_rate * shape.clip_seconds)
    with torch.no_grad():
        logmel_shape = tuple(model.frontend(torch.zeros(1, samples)).shape[1:])
    return estimate_host_train_ram(model, shape.batch_size, logmel_shape,
                                   checkpointing=shape.checkpointing,
                                   returns_memory=shape.returns_memory,
                                   caching=trains_under_caching_allocator(),
                                   baseline=TRIAL_BASELINE_BYTES, n_clips=shape.n_clips).total


class TrialMemory:
    """Estimates per trial (cached per shape) and the gate the runner starts trials through."""

    def __init__(self, limit: int | None, data_root: str | None = None) -> None:
        self.limit = limit
        self.data_root = data_root
        self.in_use = 0
        self._by_shape: dict[TrialShape, int] = {}
        self._by_trial: dict[str, int] = {}

    def estimate(self, trial) -> int:
        if trial.name not in self._by_trial:
            shape = trial_shape(trial.options, self.data_root)
            if shape not in self._by_shape:
                self._by_shape[shape] = shape_estimate(shape)
            self._by_trial[trial.name] = self._by_shape[shape]
        return self._by_trial[trial.name]

    def check_each_fits(self, trials) -> None:
        """A trial larger than the whole limit could never start: a one-line error first."""
        if self.limit is None:
            return
        for trial in trials:
            need = self.estimate(trial)
            if need > self.limit:
                raise EdgeclError(
                    f"grid trial {trial.name}: estimated peak {gib(need)} exceeds the grid's "
                    f"memory {gib(self.limit)}; lower its --batch-size or --n-mels, or give it "
                    f"--activation-checkpointing on")

    def fits(self, trial) -> bool:
        """Whether `trial` may start now (one trial always may, when none runs)."""
        return self.limit is None or self.in_use == 0 or \
            self.in_use + self.estimate(trial) <= self.limit

    def take(self, trial) -> None:
        self.in_use += self.estimate(trial)

    def release(self, trial) -> None:
        self.in_use = max(0, self.in_use - self.estimate(trial))

    def parallelism(self, trials, capacity: int) -> int:
        """Trials at once for a queue of `trials`: the executor's capacity, or fewer when their
        estimates do not fit the memory together (counted with the largest estimate)."""
        if self.limit is None or not trials:
            return capacity
        largest = max(self.estimate(trial) for trial in trials)
        return max(1, min(capacity, math.floor(self.limit / largest)))


def gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"
