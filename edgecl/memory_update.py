"""The memory update after a phase: build the candidates, let the sampler choose, refill the
memory, forget the features of exemplars that left it, and measure what it cost.

Both the trainer (after every phase) and `edgecl bench memory-update` (every sampler on the same
candidates) call `update_memory`; the memory and the sampler are arguments, never swapped in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecl.budget.macs import ForwardMacCounter, ModelMacs
from edgecl.device import device_of, synchronize
from edgecl.errors import EdgeclError
from edgecl.features import FeatureCache
from edgecl.items import ClipItems, clip_key
from edgecl.memory import ReplayMemory
from edgecl.samplers import Candidate, SelectionContext, build_sampler
from models.inference import InferenceEmbedder


@dataclass(frozen=True)
class UpdateInputs:
    """What a sampler sees: every candidate (the memory in slot order, then the new clips in
    stream order), the new ones alone, and the selection context."""

    candidates: list[Candidate]
    new: list[Candidate]
    context: SelectionContext


@dataclass(frozen=True)
class MemoryUpdate:
    """What one update did: its wall time, its costs (results.json fields) and the class balance."""

    seconds: float
    costs: dict[str, Any]
    n_candidates: int


def build_memory(config, exemplar_shape, n_classes: int):
    """(ReplayMemory, sampler) of a replay run's config. `exemplar_shape(fmt)` is the shape one
    exemplar has in format `fmt`; with a byte budget the run fails here when fewer than one
    exemplar per class (of `n_classes`) fits."""
    from edgecl.memory.formats import get_format

    fmt = get_format(config.memory_format)
    if config.memory_bytes is not None:
        memory = ReplayMemory.from_budget(config.memory_bytes, fmt, exemplar_shape(fmt), n_classes)
    else:
        memory = ReplayMemory(config.memory_size, fmt)
    sampler = build_sampler(config.mem_manage, config.sampler_options)
    if sampler.needs_waveform and memory.domain != "waveform":
        raise EdgeclError(f"--memory-format: {config.memory_format} stores log-mels, but "
                          f"--mem-manage {config.mem_manage} with these options perturbs "
                          f"waveforms")
    return memory, sampler


def selection_inputs(memory, items: ClipItems, new_clips: list, *, phase: int,
                     rng: np.random.Generator, model, sample_rate: int,
                     embed=None) -> UpdateInputs:
    """The candidates and context for a sampler; the new clips are shuffled by `rng` first.
    `embed`: the context's embedding backbone (None: the model's own)."""
    stream = [new_clips[i] for i in rng.permutation(len(new_clips))]
    in_memory = [Candidate(e.key, e.target, True, (lambda s=s: memory.decode(s)),
                           items.exemplar(memory, s)) for s, e in enumerate(memory)]
    new = [Candidate(clip_key(lc.clip), lc.target, False, items.loader_in(memory.domain, lc.clip),
                     items.clip(lc.clip)) for lc in stream]
    context = SelectionContext(
        phase=phase, rng=rng, model=model, domain=memory.domain, sample_rate=sample_rate,
        features=lambda batch: items.features.get([c.item for c in batch]), embed=embed)
    return UpdateInputs(in_memory + new, new, context)


def update_memory(memory, sampler, items: ClipItems, new_clips: list, *, phase: int,
                  rng: np.random.Generator, model, model_macs: ModelMacs, sample_rate: int,
                  clip_samples: int, exemplar_shape: tuple[int, ...],
                  budget_bytes: int | None = None) -> MemoryUpdate:
    """Refill `memory` with `sampler`'s choice among it and `new_clips`; returns the figures."""
    from edgecl.allocator import purge_caching_allocator

    # The training steps' pages, kept by the caching allocator, are not the sizes of the passes
    # below (64 candidates, front end included): hand them back first, or the two add up.
    purge_caching_allocator()
    device = device_of(model)
    synchronize(device)  # on a GPU the timing starts and ends with its queue empty
    started = time.perf_counter()
    stored_before = items.features.loaded
    with ForwardMacCounter(model, model_macs) as counter:
        embed = InferenceEmbedder(model, on_batch=lambda n: counter.count("backbone", n))
        inputs = selection_inputs(memory, items, new_clips, phase=phase, rng=rng, model=model,
                                  sample_rate=sample_rate, embed=embed)
        chosen = sampler.select(inputs.candidates, memory.capacity, inputs.context)
        before = memory.keys()
        memory.update(chosen, [(c.key, c.target, c.load) for c in inputs.new])
    synchronize(device)
    seconds = time.perf_counter() - started
    # log-mels read from the feature store count as the front-end runs they replace
    counter.count("frontend", items.features.loaded - stored_before)
    items.features.forget(items.stale_exemplars(before, memory.keys()))
    fmt = memory.format
    per_perturbation = sampler.perturbation_macs(clip_samples, sample_rate)
    costs = {
        "memory_bytes": {"used": memory.stored_bytes(), "budget": budget_bytes,
                         "per_exemplar": fmt.nbytes(exemplar_shape)},
        "memory_exemplars": len(memory), "memory_capacity": memory.capacity,
        "memory_format": fmt.name,
        "memory_update_macs": counter.macs_with_perturbations(per_perturbation),
    }
    return MemoryUpdate(seconds, costs, len(inputs.candidates))


def fresh_items(items: ClipItems) -> ClipItems:
    """The same clips with an empty feature cache (a cold start, for timing an update)."""
    return ClipItems(items.audio, FeatureCache(items.features.frontend))


def warm_items(items: ClipItems) -> ClipItems:
    """The same clips with a copy of `items`' feature cache (features cached as they are inside a
    run after training, for timing an update); the copy forgets without touching the original."""
    return ClipItems(items.audio, items.features.snapshot())


def embedding_pass_seconds(memory, items: ClipItems, new_clips: list, *, model,
                           sample_rate: int, reference: bool = False) -> tuple[float, int]:
    """(seconds, candidates) of one plain embedding pass (SelectionContext.embeddings, through
    the inference copy the samplers use) over the candidates an update of `memory` with
    `new_clips` sees, features taken from `items`' cache: the yardstick a model-based sampler's
    update is compared with. `reference`: through the model's own backbone in batches of 64
    instead (the path the samplers took before the inference copy)."""
    inputs = selection_inputs(memory, items, new_clips, phase=1, rng=np.random.default_rng(0),
                              model=model, sample_rate=sample_rate,
                              embed=None if reference else InferenceEmbedder(model))
    if reference:
        inputs.context.embed_batch_size = inputs.context.batch_size
    synchronize(device_of(model))
    started = time.perf_counter()
    inputs.context.embeddings(inputs.candidates)
    synchronize(device_of(model))
    return time.perf_counter() - started, len(inputs.candidates)
