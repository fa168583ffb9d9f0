"""A byte-budgeted replay memory never exceeds its budget, for every format and sampler."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from edgecl.errors import EdgeclError
from edgecl.memory import ReplayMemory, capacity_for_budget
from edgecl.memory.formats import FORMAT_NAMES, get_format
from edgecl.samplers import Candidate, SelectionContext, build_sampler, sampler_class, sampler_names

SAMPLE_RATE = 8000
N_CLASSES = 4  # two tasks of two classes
# Every registered sampler in every variant the bench times (e.g. each uncertainty metric).
SAMPLERS = [(name, label, {**options, "metric_k": 2}) for name in sampler_names()
            for label, options in sampler_class(name).variants()]
# Waveform perturbations cannot run on stored log-mels (the trainer rejects that combination).
SAMPLER_FORMATS = [(sampler, name) for sampler in SAMPLERS for name in FORMAT_NAMES
                   if not (build_sampler(sampler[0], sampler[2]).needs_waveform
                           and get_format(name).domain != "waveform")]


@lru_cache(maxsize=1)
def _model():
    from models import FrontEndConfig, build_model

    torch.manual_seed(0)
    return build_model("baseline", N_CLASSES, FrontEndConfig.for_sample_rate(SAMPLE_RATE),
                       width=8).eval()


def _clips(phase: int, clip_samples: int, per_class: int, seed: int):
    rng = np.random.default_rng(seed + phase)
    classes = [2 * phase, 2 * phase + 1]
    return [(f"p{phase}c{c}n{i}", c, rng.uniform(-0.5, 0.5, clip_samples).astype(np.float32))
            for c in classes for i in range(per_class)]


@pytest.mark.parametrize("sampler_format", SAMPLER_FORMATS, ids=lambda sf: f"{sf[0][1]}-{sf[1]}")
@settings(max_examples=8, deadline=None)
@given(clip_samples=st.integers(1600, 4000), budget_fraction=st.floats(0.0, 1.0),
       per_class=st.integers(1, 6), seed=st.integers(0, 1000))
def test_memory_stays_within_its_byte_budget(sampler_format, clip_samples, budget_fraction,
                                             per_class, seed):
    (name, label, options), format_name = sampler_format
    fmt = get_format(format_name)
    model = _model()
    with torch.no_grad():
        frontend = model.frontend
        shape = (clip_samples,) if fmt.domain == "waveform" else tuple(
            frontend(torch.zeros(1, clip_samples)).shape[1:])
    per_exemplar = fmt.nbytes(shape)
    # Budgets from just below one exemplar per class up to twice the clips on offer.
    budget = int(per_exemplar * (N_CLASSES - 1 + budget_fraction * 2 * N_CLASSES * per_class)) + 1
    try:
        capacity = capacity_for_budget(budget, fmt, shape, N_CLASSES)
    except EdgeclError as error:
        assert "impossible budget" in str(error) and budget < N_CLASSES * per_exemplar
        event("impossible budget")
        return
    memory = ReplayMemory(capacity, fmt)
    chooser = build_sampler(name, options)

    def to_domain(waveform: np.ndarray) -> np.ndarray:
        if fmt.domain == "waveform":
            return waveform
        with torch.no_grad():
            return frontend(torch.from_numpy(waveform)[None])[0].numpy()

    def features(candidates):
        arrays = torch.from_numpy(np.stack([c.load() for c in candidates]))
        with torch.no_grad():
            return frontend(arrays) if fmt.domain == "waveform" else arrays

    for phase in range(2):
        new = [(key, target, to_domain(wave)) for key, target, wave in
               _clips(phase, clip_samples, per_class, seed)]
        candidates = [Candidate(e.key, e.target, True, lambda i=i: memory.decode(i))
                      for i, e in enumerate(memory)]
        candidates += [Candidate.from_array(key, target, array) for key, target, array in new]
        context = SelectionContext(phase=phase,
                                   rng=np.random.default_rng(seed), model=model, features=features,
                                   domain=fmt.domain, sample_rate=SAMPLE_RATE, batch_size=16)
        memory.update(chooser.select(candidates, capacity, context), new)
        assert len(memory) <= capacity
        assert memory.stored_bytes() == len(memory) * per_exemplar <= budget
        assert len(memory) >= 1
        event(f"{label} filled")
        assert sum(len(e.encoded.to_bytes(e.target)) for e in memory) == memory.stored_bytes()
