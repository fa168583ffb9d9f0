"""Device budgets: replay-memory bytes, compute per learning phase, and the costs a run measures.

Byte sizes (`parse_bytes`) follow SI for KB/MB/GB (powers of 1000) and IEC for KiB/MiB/GiB (powers
of 1024). SI is the safe reading of an ambiguous "4MB": 4,000,000 bytes fits a device whichever
convention its datasheet used, while 4 MiB might not.

Compute cost conventions (MACs = multiply-accumulates, as counted by `models.profile`):
- One training step on a batch of B clips costs `3 x forward MACs x B`: the backward pass costs about
  twice the forward (one product for the gradient w.r.t. the activations, one for the gradient
  w.r.t. the weights), as in Kaplan et al. 2020, "Scaling Laws for Neural Language Models"
  (training compute C = 6N per token: 2N forward, 4N backward) and Epoch AI's measurement
  "What's the backward-forward FLOP ratio for neural networks?" (Hobbhahn & Sevilla 2021: ~2:1).
  The fixed log-mel front end has no weights: when training runs on cached features it costs
  nothing per step, otherwise it costs one forward per clip (no backward through it).
- The memory update's cost is the forward passes its sampler runs (see `memory_update_macs`).
"""

from __future__ import annotations

import copy
import math
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from edgecl.errors import EdgeclError
from edgecl.memory.formats import ExemplarFormat, get_format

# ---------------------------------------------------------------------------------------------
# Byte sizes

_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
    "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str | int, option: str = "--memory-bytes") -> int:
    """Parse a byte size: `1000`, `512KB` (SI, x1000), `4MiB` (IEC, x1024), `1.5MB`, `2 GB`.

    Units are case-insensitive: B, KB, MB, GB (powers of 1000) and KiB, MiB, GiB (powers of 1024).
    A fractional result rounds down (a budget is a ceiling). Raises EdgeclError naming `option`
    for anything else, and for a size below one byte.
    """
    if isinstance(text, bool):
        raise EdgeclError(f"{option}: expected a byte size like 512KB, 4MiB or 1000, got {text!r}")
    if isinstance(text, int):
        size = text
    else:
        match = _SIZE.match(str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise EdgeclError(f"{option}: expected a byte size like 512KB, 4MiB or 1000 "
                              f"(units B, KB, MB, GB = x1000; KiB, MiB, GiB = x1024), got {text!r}")
        number = match.group(1)
        # Integers stay exact; decimals go through float (more than enough for byte budgets).
        size = int(number) * _UNITS[unit] if number.isdigit() else math.floor(float(number) * _UNITS[unit])
    if size < 1:
        raise EdgeclError(f"{option}: expected at least 1 byte, got {text!r}")
    return size


_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgt]?)\s*$", re.IGNORECASE)
_COUNT_SUFFIX = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12}


def parse_count(text: str | int, option: str) -> int:
    """Parse a large positive count such as a MAC budget: `2000000`, `2e9`, `500M`, `3G` (SI)."""
    if isinstance(text, int) and not isinstance(text, bool):
        count = text
    else:
        match = _COUNT.match(str(text))
        if match is None:
            raise EdgeclError(f"{option}: expected a positive count like 500M, 2G or 2e9, "
                              f"got {text!r}")
        count = math.floor(float(match.group(1)) * _COUNT_SUFFIX[match.group(2).lower()])
    if count < 1:
        raise EdgeclError(f"{option}: expected a positive count like 500M, 2G or 2e9, got {text!r}")
    return count


def format_bytes(size: int | float | None) -> str:
    """Human-readable size in SI units (the parse_bytes convention): `512 B`, `1.5 MB`."""
    if size is None:
        return "-"
    for unit, factor in (("GB", 1000 ** 3), ("MB", 1000 ** 2), ("KB", 1000)):
        if abs(size) >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{int(size)} B"


# ---------------------------------------------------------------------------------------------
# Replay memory capacity


def capacity_for_budget(budget_bytes: int, memory_format: ExemplarFormat | str,
                        shape: tuple[int, ...], n_classes: int) -> int:
    """How many exemplars of `shape` fit in `budget_bytes` in `memory_format`.

    Raises EdgeclError ("impossible budget") when that is fewer than one exemplar per class:
    pass the number of classes the run will ever see, so the run fails before training.
    """
    fmt = get_format(memory_format) if isinstance(memory_format, str) else memory_format
    per_exemplar = fmt.nbytes(shape)
    capacity = budget_bytes // per_exemplar
    if capacity < n_classes:
        raise EdgeclError(
            f"--memory-bytes: impossible budget: {budget_bytes} bytes hold {capacity} {fmt.name} "
            f"exemplars of {per_exemplar} bytes (shape {list(shape)}), fewer than one per class "
            f"for {n_classes} classes; expected at least {per_exemplar * n_classes} bytes")
    return capacity


# ---------------------------------------------------------------------------------------------
# MACs


@dataclass(frozen=True)
class ModelMacs:
    """Forward MACs per clip, split as models.profile.macs_breakdown reports them."""

    frontend: int
    backbone: int
    head: int

    @classmethod
    def from_breakdown(cls, breakdown: Mapping[str, int]) -> "ModelMacs":
        """From `models.profile.macs_breakdown(model, clip_samples)`."""
        return cls(int(breakdown["frontend"]), int(breakdown["backbone"]), int(breakdown["head"]))

    @classmethod
    def of_model(cls, model, clip_samples: int) -> "ModelMacs":
        """Measure a SoundClassifier with models.profile (imports torch)."""
        from models.profile import macs_breakdown

        return cls.from_breakdown(macs_breakdown(model, clip_samples))

    @property
    def total(self) -> int:
        return self.frontend + self.backbone + self.head


def train_step_macs(macs: ModelMacs, batch_size: int, features_cached: bool = True) -> int:
    """MACs of one optimizer step on `batch_size` clips: 3 x trainable forward x batch (+ front end).

    The front end is a fixed transform: 0 when training on cached log-mels, else one forward per clip.
    """
    trainable = macs.backbone + macs.head
    frontend = 0 if features_cached else macs.frontend
    return batch_size * (3 * trainable + frontend)


def forward_macs(macs: ModelMacs, n_clips: int, features_cached: bool = True) -> int:
    """MACs of inference on `n_clips` (validation, testing)."""
    return n_clips * (macs.backbone + macs.head + (0 if features_cached else macs.frontend))


RESAMPLE_TAPS = 13  # ~2 x lowpass_filter_width (6) + 1 taps per output sample (torchaudio default)


def _fft_macs(n: int) -> int:
    """A real FFT of n points: ~2 n log2 n MACs (n/2 log2 n complex butterflies, 4 real MACs each)."""
    return int(2 * n * max(1.0, math.log2(n)))


def perturbation_macs(uncert_metric: str, clip_samples: int, sample_rate: int = 16000) -> int:
    """Rough MACs of producing one perturbed copy of a clip (averaged over a sampler's k draws),
    following edgecl.samplers.perturbations:

    - noise: an rfft and an irfft of the clip's length, the 1/f shaping, the RMS and the scaled
      add (~4 MACs per sample).
    - shift: half the draws are time shifts (a roll, 0 MACs), half pitch shifts: an STFT and an
      inverse STFT (n_fft ~32 ms, hop n_fft/4), the phase vocoder (~4 MACs per bin and frame) and a
      polyphase resample (~13 taps per sample).
    - noisytune perturbs the embedding (~1 MAC per dimension, negligible): 0.
    These are order-of-magnitude figures; the forward passes dominate a memory update.
    """
    if uncert_metric == "noise":
        return 2 * _fft_macs(clip_samples) + 4 * clip_samples
    if uncert_metric == "shift":
        n_fft = 2 ** max(6, round(math.log2(sample_rate * 0.032)))
        frames = clip_samples // (n_fft // 4) + 1
        stft_pair = 2 * frames * _fft_macs(n_fft)
        vocoder = 4 * frames * (n_fft // 2 + 1)
        return (stft_pair + vocoder + RESAMPLE_TAPS * clip_samples) // 2
    if uncert_metric == "noisytune":
        return 0
    raise EdgeclError(f"--uncert-metric: expected shift, noise or noisytune, got {uncert_metric!r}")


def memory_update_macs(sampler: str, n_candidates: int, macs: ModelMacs, *,
                       uncert_metric: str | None = None, k: int = 0, clip_samples: int = 0,
                       sample_rate: int = 16000, features_cached: bool = True) -> int:
    """MACs one memory update spends on `n_candidates` (new clips + current memory).

    - random, reservoir: no model evaluation, 0.
    - prototype: one embedding (backbone forward) per candidate; herding's distance sums
      (~ selected x class size x embedding dim) are orders of magnitude smaller and not counted.
    - uncertainty/noisytune: one embedding per candidate, then the head k times.
    - uncertainty/shift, noise: k full forwards per candidate, front end included (the perturbed
      audio has new features), plus `perturbation_macs` per draw.
    `features_cached` says whether unperturbed candidates' log-mels are already computed.
    """
    frontend = 0 if features_cached else macs.frontend
    if sampler in ("random", "reservoir"):
        return 0
    if sampler == "prototype":
        return n_candidates * (frontend + macs.backbone)
    if sampler != "uncertainty":
        raise EdgeclError(f"--mem-manage: expected random, reservoir, prototype or uncertainty, "
                          f"got {sampler!r}")
    if k < 1:
        raise EdgeclError(f"--metric-k: expected a positive number of perturbations, got {k}")
    if uncert_metric == "noisytune":
        return n_candidates * (frontend + macs.backbone + k * macs.head)
    per_draw = macs.total + perturbation_macs(uncert_metric or "", clip_samples, sample_rate)
    return n_candidates * k * per_draw


class ForwardMacCounter:
    """Measures the forward MACs a SoundClassifier really runs inside a `with` block.

    Forward hooks count the clips (batch rows) through the front end, the backbone and the head;
    MACs = clips x that part's MACs per clip. `full_forwards` counts waveform-in calls of the whole
    model: during a memory update those are the perturbed copies (`perturbation_macs` each).
    Measuring beats a formula here: e.g. the uncertainty sampler fills phase 0 at random.
    """

    def __init__(self, model, macs: ModelMacs) -> None:
        self.model, self.per_clip = model, macs
        self.clips = {"frontend": 0, "backbone": 0, "head": 0}
        self.full_forwards = 0
        self._handles: list = []

    def __enter__(self) -> "ForwardMacCounter":
        def counter(part: str):
            def hook(_module, inputs) -> None:
                if part == "model":
                    self.full_forwards += int(inputs[0].shape[0])
                else:
                    self.clips[part] += int(inputs[0].shape[0])
            return hook

        for part in self.clips:
            self._handles.append(getattr(self.model, part).register_forward_pre_hook(counter(part)))
        self._handles.append(self.model.register_forward_pre_hook(counter("model")))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def macs(self) -> int:
        """Forward MACs counted so far."""
        return sum(self.clips[part] * getattr(self.per_clip, part) for part in self.clips)

    def macs_with_perturbations(self, per_full_forward: int) -> int:
        """Forward MACs plus `per_full_forward` (a perturbation's cost) per whole-model call."""
        return self.macs + self.full_forwards * per_full_forward


# ---------------------------------------------------------------------------------------------
# Compute budget per phase


@dataclass(frozen=True)
class ComputeBudget:
    """Limits for one learning phase; None means unlimited."""

    max_steps: int | None = None
    max_train_seconds: float | None = None
    max_train_macs: int | None = None

    def __post_init__(self) -> None:
        for option, value in (("--max-steps", self.max_steps),
                              ("--max-train-seconds", self.max_train_seconds),
                              ("--max-train-macs", self.max_train_macs)):
            if value is not None and not value > 0:
                raise EdgeclError(f"{option}: expected a positive number, got {value!r}")

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.max_steps, self.max_train_seconds,
                                           self.max_train_macs))


@dataclass
class PhaseMeter:
    """Counts one phase's optimizer steps, training MACs and time, and decides when to stop.

    The training loop asks `exhausted(next_step_macs)` before each optimizer step and calls
    `record_step(macs)` after it (or, as a StopCondition, `should_stop(batch_size)` and
    `step_done(batch_size)` with `step_macs_per_clip` set). Steps and MACs never exceed their budget (a step that would
    overshoot the MAC budget is not taken); the time budget is checked between steps, so a phase
    may overrun it by at most one step. `reason` names the first limit reached (or None).
    """

    budget: ComputeBudget = field(default_factory=ComputeBudget)
    step_macs_per_clip: int = 0  # train_step_macs(macs, 1): a step's MACs are linear in the batch
    clock: Callable[[], float] = time.perf_counter
    steps: int = 0
    macs: int = 0
    reason: str | None = None
    _start: float | None = None
    _stop: float | None = None

    def start(self) -> "PhaseMeter":
        """Start (or restart) the phase clock."""
        self._start, self._stop = self.clock(), None
        return self

    def finish(self) -> None:
        """Freeze the phase clock (seconds stops growing)."""
        if self._stop is None:
            self._stop = self.clock()

    @property
    def seconds(self) -> float:
        if self._start is None:
            return 0.0
        return (self._stop if self._stop is not None else self.clock()) - self._start

    def record_step(self, step_macs: int) -> None:
        self.steps += 1
        self.macs += int(step_macs)

    def exhausted(self, next_step_macs: int = 0) -> bool:
        """True when the next step must not be taken; sets `reason` the first time."""
        if self.reason is None:
            self.reason = self._limit_reached(next_step_macs)
        return self.reason is not None

    def _limit_reached(self, next_step_macs: int) -> str | None:
        budget = self.budget
        if budget.max_steps is not None and self.steps >= budget.max_steps:
            return "max_steps"
        if budget.max_train_macs is not None and self.macs + next_step_macs > budget.max_train_macs:
            return "max_train_macs"
        if budget.max_train_seconds is not None and self.seconds >= budget.max_train_seconds:
            return "max_train_seconds"
        return None

    # The training loop's StopCondition protocol (edgecl.training.loop): it speaks in batch sizes.
    def should_stop(self, batch_size: int) -> bool:
        return self.exhausted(batch_size * self.step_macs_per_clip)

    def step_done(self, batch_size: int) -> None:
        self.record_step(batch_size * self.step_macs_per_clip)

    def results(self) -> dict[str, Any]:
        """Per-phase results fields: train_steps, train_macs, train_seconds, stop flags."""
        return {
            "train_steps": self.steps,
            "train_macs": self.macs,
            "train_seconds": self.seconds,
            "stopped_for_budget": self.reason is not None,
            "stop_reason": self.reason,
        }


# ---------------------------------------------------------------------------------------------
# RAM


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


@dataclass(frozen=True)
class TrainRam:
    """Parts of the device training-RAM estimate, in bytes (see device_train_ram_bytes)."""

    weights: int
    gradients: int
    optimizer_state: int
    activations: int
    input_batch: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer_state + self.activations + self.input_batch

    def as_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients,
                "optimizer_state": self.optimizer_state, "activations": self.activations,
                "input_batch": self.input_batch, "total": self.total}


def device_train_ram(model, batch_size: int, input_shape: tuple[int, ...],
                     forward: Callable | None = None) -> TrainRam:
    """Estimate the RAM a device needs to train `model` with Adam at `batch_size`, in fp32.

    device_train_ram_bytes = weights + gradients + optimizer state + activations + input batch:
    - weights: every parameter and buffer (e.g. BatchNorm running statistics), 4 bytes each;
    - gradients: 4 bytes per trainable parameter;
    - optimizer state: Adam keeps two moments per trainable parameter, 8 bytes;
      so the parameter part is 16 bytes per trainable parameter;
    - activations: the tensors autograd saves for the backward pass during one training forward
      of a batch, measured (not modelled) with torch.autograd.graph.saved_tensors_hooks on a copy
      of the model in train mode; each storage is counted once, parameters and the input excluded;
    - input batch: `batch_size x prod(input_shape)` float32 values.
    Not counted: the transient gradients of activations during backward (at most a few layers'
    worth at a time), kernel workspaces, allocator fragmentation, the framework itself, and the
    replay memory (reported separately as memory_bytes). `forward(model, batch)` defaults to
    `model(batch)`; pass `lambda m, x: m.forward_features(x)` for training on cached log-mels.
    The model, its buffers and the global RNG are left untouched.
    """
    import torch

    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    weights = 4 * (sum(p.numel() for p in params) + sum(b.numel() for b in model.buffers()))
    input_batch = 4 * batch_size * math.prod(input_shape)

    probe = copy.deepcopy(model).train()
    skip = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    saved: dict[int, int] = {}
    # Saved tensors stay alive (through detached aliases) until the end, so no two of them can
    # share an address. The graph itself holds only a placeholder: returning the tensor from
    # pack would tie an op's output to its own grad_fn, a cycle that is never freed.
    alive: list = []

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
            alive.append(tensor.detach())
        return None

    def unpack(_placeholder):
        raise RuntimeError("device_train_ram measures a forward pass only; it never runs backward")

    run = forward or (lambda m, x: m(x))
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        device = params[0].device if params else torch.device("cpu")
        batch = torch.randn(batch_size, *input_shape, device=device)
        skip.add(batch.untyped_storage().data_ptr())
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            output = run(probe, batch)
        del output, alive
    return TrainRam(weights=weights, gradients=4 * trainable, optimizer_state=8 * trainable,
                    activations=sum(saved.values()), input_batch=input_batch)


def device_train_ram_bytes(model, batch_size: int, input_shape: tuple[int, ...],
                           forward: Callable | None = None) -> int:
    """Total of `device_train_ram` (bytes)."""
    return device_train_ram(model, batch_size, input_shape, forward).total
