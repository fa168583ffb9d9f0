"""The host's training memory: an estimate of a run's peak resident set, made before phase 0.

A training step's memory is dominated by what autograd keeps for the backward pass, and that
grows with the batch and the input (one BC-ResNet-40 map at 48 kHz x 10 s is 15 MB per clip).
The estimate measures, rather than models, what each top-level layer of the backbone keeps, on a
copy of the model and a batch of PROBE_BATCH clips (so estimating a configuration never costs its
peak), and scales it to the batch:

    total = baseline + parameters + data + input batch + BACKWARD_FACTOR x kept activations

- baseline: the process before training (interpreter, torch, the run's code), read from it;
- parameters: weights, gradients and Adam's two moments, 16 bytes per trainable parameter, plus
  buffers;
- data: the run's feature cache, every clip's log-mel in float32;
- kept activations: plain training keeps every layer's saved tensors; with activation
  checkpointing (models.checkpointing) a checkpointed block keeps only its input, and the largest
  block's saved tensors exist once more while it is recomputed in backward;
- BACKWARD_FACTOR: what a step holds at its peak beyond the kept tensors (the gradients flowing
  back through the kept maps, kernel workspaces and the heap's fragmentation under
  edgecl.allocator's settings), as a multiple of the kept bytes. It is calibrated, not derived:
  scripts/calibrate_host_ram.py measures the peak RSS of training steps against the kept bytes
  over rates, batches and widths, with and without checkpointing, and the peak over the baseline
  came to 2.2-4.2 times the kept bytes (docs/results/training-memory.md). Most of that is the
  heap's fragmentation, not live tensors: a run that returns freed memory to the system
  (`--activation-checkpointing lean`, edgecl.allocator.return_freed_memory) peaks at
  RETURNING_BACKWARD_FACTOR times the kept bytes instead, once the batch's largest map is a
  block the allocator returns (smaller maps stay in the heap, and fragment it as before), and a
  process under the caching allocator (edgecl.allocator, jemalloc: freed maps reused by size)
  at CACHING_BACKWARD_FACTOR times, whatever the checkpointing.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

PROBE_BATCH = 2
BACKWARD_FACTOR = 3.0
RETURNING_BACKWARD_FACTOR = 1.5
CACHING_BACKWARD_FACTOR = 1.5


@dataclass(frozen=True)
class LayerActivations:
    """Per clip: bytes a layer's input holds and bytes autograd saves inside it."""

    input_bytes: float
    saved_bytes: float
    checkpointable: bool


@dataclass(frozen=True)
class HostTrainRam:
    """Parts of the host training-RAM estimate, in bytes."""

    baseline: int
    parameters: int
    data: int
    input_batch: int
    activations: int
    checkpointing: bool
    returns_memory: bool = False
    caching_allocator: bool = False

    @property
    def total(self) -> int:
        return self.baseline + self.parameters + self.data + self.input_batch + self.activations

    def as_dict(self) -> dict[str, int | bool]:
        return {"baseline": self.baseline, "parameters": self.parameters, "data": self.data,
                "input_batch": self.input_batch, "activations": self.activations,
                "checkpointing": self.checkpointing, "returns_memory": self.returns_memory,
                "caching_allocator": self.caching_allocator, "total": self.total}


def activation_profile(model, input_shape: tuple[int, ...]) -> list[LayerActivations]:
    """What one clip costs in each top-level layer of `model.backbone.layers` (the whole backbone
    as one layer when it has no such sequence), plus the rest of the forward (pooling and head) as
    a last entry. Measured on a copy in train mode; the model and the RNG are left untouched."""
    import torch

    probe = copy.deepcopy(model).train()
    backbone = probe.backbone
    layers = list(getattr(backbone, "layers", [backbone]))
    blocks = getattr(backbone, "checkpointable_blocks", ())
    skip = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    saved = [0] * (len(layers) + 1)
    inputs = [0] * (len(layers) + 1)
    seen: set[int] = set()
    current = [len(layers)]  # pooling and head until a layer starts
    alive: list = []

    def enter(index: int):
        def hook(_module, args):
            current[0] = index
            inputs[index] = args[0].untyped_storage().nbytes()
        return hook

    def leave(_module, _args, _output):
        current[0] = len(layers)

    def pack(tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in skip and key not in seen:
            seen.add(key)
            saved[current[0]] += storage.nbytes()
            alive.append(tensor.detach())
        return None

    def unpack(_placeholder):
        raise RuntimeError("activation_profile measures a forward pass only")

    handles = [layer.register_forward_pre_hook(enter(i)) for i, layer in enumerate(layers)]
    handles += [layer.register_forward_hook(leave) for layer in layers]
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            device = next(probe.parameters()).device
            batch = torch.randn(PROBE_BATCH, *input_shape, device=device)
            skip.add(batch.untyped_storage().data_ptr())
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                output = probe.forward_features(batch)
            del output
            alive.clear()
    finally:
        for handle in handles:
            handle.remove()
    return [LayerActivations(inputs[i] / PROBE_BATCH, saved[i] / PROBE_BATCH,
                             i < len(layers) and isinstance(layers[i], blocks))
            for i in range(len(layers) + 1)]


def kept_bytes(profile: list[LayerActivations], checkpointing: bool) -> float:
    """Per clip: what autograd keeps from the forward until the backward pass."""
    if not checkpointing:
        return sum(layer.saved_bytes for layer in profile)
    plain = [layer for layer in profile if not layer.checkpointable]
    blocks = [layer for layer in profile if layer.checkpointable]
    return (sum(layer.saved_bytes for layer in plain)
            + sum(layer.input_bytes for layer in blocks)
            + max((layer.saved_bytes for layer in blocks), default=0))


def activation_bytes(profile: list[LayerActivations], batch_size: int,
                     checkpointing: bool, returns_memory: bool = False,
                     caching: bool = False) -> int:
    """A training step's activation memory at its peak, for a batch, from a per-clip profile, in
    a process whose malloc is the caching allocator when `caching` (edgecl.allocator)."""
    from edgecl.allocator import RETURNED_BLOCK_BYTES

    largest_map = batch_size * max(layer.input_bytes for layer in profile)
    returned = returns_memory and largest_map >= RETURNED_BLOCK_BYTES
    factor = (CACHING_BACKWARD_FACTOR if caching else
              RETURNING_BACKWARD_FACTOR if returned else BACKWARD_FACTOR)
    return math.ceil(batch_size * factor * kept_bytes(profile, checkpointing))


def parameter_bytes(model) -> int:
    """Weights, gradients and Adam's two moments (16 bytes per trainable parameter), buffers."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return 16 * trainable + 4 * (frozen + sum(b.numel() for b in model.buffers()))


def supports_checkpointing(model) -> bool:
    return bool(getattr(model.backbone, "checkpointable_blocks", ()))


def estimate_host_train_ram(model, batch_size: int, input_shape: tuple[int, ...], *,
                            checkpointing: bool, baseline: int, n_clips: int,
                            profile: list[LayerActivations] | None = None,
                            returns_memory: bool = False, caching: bool = False) -> HostTrainRam:
    """The peak RSS of training `model` on batches of `batch_size` log-mels of `input_shape`, for
    a run that caches `n_clips` clips' features, in a process that holds `baseline` bytes now
    (and that returns freed memory to the system when `returns_memory`, or whose malloc is the
    caching allocator when `caching`)."""
    profile = profile if profile is not None else activation_profile(model, input_shape)
    clip_bytes = 4 * math.prod(input_shape)
    return HostTrainRam(baseline=baseline, parameters=parameter_bytes(model),
                        data=n_clips * clip_bytes, input_batch=batch_size * clip_bytes,
                        activations=activation_bytes(profile, batch_size, checkpointing,
                                                     returns_memory, caching),
                        checkpointing=checkpointing, returns_memory=returns_memory,
                        caching_allocator=caching)


def largest_batch(limit: int, fixed: int, per_clip: float) -> int:
    """The largest batch whose estimate stays under `limit` (0 when none does)."""
    return max(0, int((limit - fixed) // per_clip)) if per_clip > 0 else 0


CHECKPOINTING_MODES = ("off", "on", "lean", "auto")
# Plans in the order `auto` tries them, cheapest in time first: (checkpointing, returns memory).
PLANS = {"off": (False, False), "on": (True, False), "lean": (True, True)}


def plan_training_memory(model, batch_size: int, input_shape: tuple[int, ...], *, mode: str,
                         limit: int | None, baseline: int, n_clips: int,
                         n_mels: int) -> HostTrainRam:
    """The estimate of the plan a run trains with: `off`, `on` (checkpointing), `lean`
    (checkpointing, freed memory returned to the system), or `auto` (the first of those whose
    estimate keeps under `limit`). A plan over `limit` is a one-line EdgeclError naming what would
    fit (batch size, mels, checkpointing)."""
    from edgecl.allocator import caching_allocator_loaded
    from edgecl.errors import EdgeclError

    supported = supports_checkpointing(model)
    caching = caching_allocator_loaded()
    if mode in ("on", "lean") and not supported:
        raise EdgeclError(f"--activation-checkpointing {mode}: the {model.backbone.arch_name} "
                          "model has no checkpointable blocks (bc-resnet has)")
    profile = activation_profile(model, input_shape)

    def estimate(plan: str) -> HostTrainRam:
        checkpointing, returns_memory = PLANS[plan]
        return estimate_host_train_ram(model, batch_size, input_shape,
                                       checkpointing=checkpointing, baseline=baseline,
                                       n_clips=n_clips, profile=profile,
                                       returns_memory=returns_memory, caching=caching)

    tried = [mode] if mode != "auto" else list(PLANS) if supported else ["off"]
    for plan in tried:
        chosen = estimate(plan)
        if limit is None or chosen.total <= limit:
            return chosen
    raise EdgeclError(over_limit_message(chosen, estimate, limit, batch_size, n_mels,
                                         supported and mode in ("off", "on")))


def over_limit_message(best: HostTrainRam, estimate, limit: int, batch_size: int, n_mels: int,
                       checkpointing_would_help: bool) -> str:
    """The one line refusing a plan whose estimate `best` exceeds `limit`, naming what fits."""
    from edgecl.budget.units import format_bytes

    per_clip = (best.activations + best.input_batch) / batch_size
    fixed = best.total - best.activations - best.input_batch
    levers = []
    batch = largest_batch(limit, fixed, per_clip)
    if batch >= 1:
        levers.append(f"--batch-size {batch}")
    if n_mels >= 64 and fixed + (best.total - fixed) / 2 <= limit:
        levers.append(f"--n-mels {n_mels // 2}")
    if checkpointing_would_help and estimate("lean").total <= limit:
        levers.append("--activation-checkpointing auto")
    hint = ("would fit: " + ", ".join(levers)) if levers else \
        "nothing that keeps this model fits: the process and data alone take " \
        f"{format_bytes(fixed)}"
    plan = (" with activation checkpointing" if best.checkpointing else "") + \
        (" and freed memory returned" if best.returns_memory else "")
    return (f"--max-train-ram {format_bytes(limit)}: training is estimated to peak at "
            f"{format_bytes(best.total)}{plan}; {hint}")
