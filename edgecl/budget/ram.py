"""RAM figures: this process's peak resident set, and the RAM a device needs to train a model."""

from __future__ import annotations

import copy
import math
import resource
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecl.device import forked_rng


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class PeakRss:
    """Peak resident set size of this process during a block (`with PeakRss() as peak: ...;
    peak.bytes`). On Linux the kernel's high-water mark (VmHWM) is reset to the current RSS at
    the start (/proc/self/clear_refs), so the figure is the block's own (`scoped` True);
    elsewhere it is the process's peak so far, a ceiling of the block's."""

    def __enter__(self) -> PeakRss:
        self.scoped = _reset_high_water_mark()
        self.bytes = 0
        return self

    def __exit__(self, *exc) -> None:
        self.bytes = _high_water_mark() if self.scoped else peak_rss_bytes()


class StagePeaks:
    """Peak resident set of each stage of a block, to find which step holds the memory.

    `with StagePeaks() as peaks:` makes it the active trace; `rss_stage(name)` (anywhere below,
    a no-op without an active trace) ends the current stage and starts `name`. On Linux each
    stage's peak is the kernel's high-water mark (VmHWM), reset when the stage starts, so a
    spike between two samples is not missed; elsewhere every stage gets the process's peak so
    far. `bytes` is the block's peak (the highest stage), `stages` the stages in order, each
    {"stage", "peak_rss_bytes", "seconds"}; a stage marked twice in a row is merged."""

    def __enter__(self) -> StagePeaks:
        self.stages: list[dict[str, Any]] = []
        self.bytes = 0
        self.scoped = _reset_high_water_mark()
        self._outer, self._name, self._started = _ACTIVE_TRACE[0], "start", time.monotonic()
        _ACTIVE_TRACE[0] = self
        return self

    def mark(self, name: str) -> None:
        if name == self._name:
            return
        self._close_stage()
        self._name, self._started = name, time.monotonic()

    def __exit__(self, *exc) -> None:
        self._close_stage()
        _ACTIVE_TRACE[0] = self._outer

    def _close_stage(self) -> None:
        peak = _high_water_mark() if self.scoped else peak_rss_bytes()
        self.bytes = max(self.bytes, peak)
        self.stages.append({"stage": self._name, "peak_rss_bytes": peak,
                            "seconds": round(time.monotonic() - self._started, 2)})
        if self.scoped:
            _reset_high_water_mark()

    def highest(self) -> dict[str, Any]:
        """The stage with the highest peak (the first of equals)."""
        return max(self.stages, key=lambda stage: stage["peak_rss_bytes"])


_ACTIVE_TRACE: list[StagePeaks | None] = [None]


def rss_stage(name: str) -> None:
    """Start stage `name` of the active StagePeaks trace, if any."""
    trace = _ACTIVE_TRACE[0]
    if trace is not None:
        trace.mark(name)


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _high_water_mark() > 0
    except OSError:
        return False


def _high_water_mark() -> int:
    return proc_kib_field("/proc/self/status", "VmHWM") or 0


def proc_kib_field(path: str, key: str) -> int | None:
    """The field `key` of a /proc file of "Key: N kB" lines (status, meminfo), in bytes; None
    where the file or the field is missing."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss_bytes() -> int:
    """This process's resident set now (Linux: /proc/self/statm); its peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()


@dataclass(frozen=True)
class TrainRam:
    """Parts of the device training-RAM estimate, in bytes (see device_train_ram_bytes)."""

    weights: int
    gradients: int
    optimizer_state: int
    activations: int
    input_batch: int
    teacher: int = 0  # a distillation teacher's weights and inference activations (0: none)

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer_state + self.activations
                + self.input_batch + self.teacher)

    def as_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients,
                "optimizer_state": self.optimizer_state, "activations": self.activations,
                "input_batch": self.input_batch, "teacher": self.teacher, "total": self.total}


def weight_bytes(model) -> int:
    """Every parameter and buffer (e.g. BatchNorm running statistics) in fp32: 4 bytes each."""
    return 4 * (sum(p.numel() for p in model.parameters())
                + sum(b.numel() for b in model.buffers()))


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
    weights = weight_bytes(model)
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
    device = params[0].device if params else torch.device("cpu")
    # forked on the model's GPU too: the probe's dropout would shift the run's later masks
    with forked_rng(device), torch.enable_grad():
        batch = torch.randn(batch_size, *input_shape, device=device)
        skip.add(batch.untyped_storage().data_ptr())
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            output = run(probe, batch)
        del output
        alive.clear()
    return TrainRam(weights=weights, gradients=4 * trainable, optimizer_state=8 * trainable,
                    activations=sum(saved.values()), input_batch=input_batch)


def device_train_ram_bytes(model, batch_size: int, input_shape: tuple[int, ...],
                           forward: Callable | None = None) -> int:
    """Total of `device_train_ram` (bytes)."""
    return device_train_ram(model, batch_size, input_shape, forward).total


@dataclass(frozen=True)
class InferenceRam:
    """Parts of the RAM a device needs to run a frozen model on a batch (see device_inference_ram)."""

    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations


def device_inference_ram(model, batch_size: int, input_shape: tuple[int, ...],
                         forward: Callable | None = None) -> InferenceRam:
    """Estimate the RAM a device needs to run `model` (eval mode, no gradients) on a batch, fp32.

    - weights: every parameter and buffer, 4 bytes each;
    - activations: the peak, over one forward of a batch of `batch_size`, of the bytes held at
      once by the tensors entering and leaving the model's modules, measured (not modelled): every
      module input and output is tracked by a weak reference until it is freed, and the live total
      is taken at each module boundary. The input batch itself is not counted (the caller has it).
    Not counted: temporaries inside one module that never cross a module boundary, kernel
    workspaces. The model and the global RNG are left untouched.
    """
    import torch

    weights = weight_bytes(model)
    probe = copy.deepcopy(model).eval()
    skip = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    skip |= {b.untyped_storage().data_ptr() for b in probe.buffers()}
    live: dict[int, tuple[weakref.ref, int]] = {}
    peak = 0

    def note(values) -> None:
        nonlocal peak
        values = values if isinstance(values, (tuple, list)) else (values,)
        for value in values:
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                if storage.data_ptr() not in skip:
                    live[storage.data_ptr()] = (weakref.ref(value), storage.nbytes())
        for key in [key for key, (ref, _) in live.items() if ref() is None]:
            del live[key]
        peak = max(peak, sum(size for _, size in live.values()))

    handles = [module.register_forward_pre_hook(lambda _m, inputs: note(inputs))
               for module in probe.modules()]
    handles += [module.register_forward_hook(lambda _m, _inputs, output: note(output))
                for module in probe.modules()]
    run = forward or (lambda m, x: m(x))
    try:
        device = next(probe.parameters()).device
        with forked_rng(device), torch.no_grad():
            batch = torch.randn(batch_size, *input_shape, device=device)
            skip.add(batch.untyped_storage().data_ptr())
            run(probe, batch)
    finally:
        for handle in handles:
            handle.remove()
    return InferenceRam(weights=weights, activations=peak)
