"""balanced-random keeps every seen class at its share where plain random lets old classes vanish."""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgecl.samplers import build_sampler, sampler_names
from edgecl.samplers.base import Candidate, SelectionContext


def _candidates(counts: dict[int, int]) -> list[Candidate]:
    return [Candidate(f"{target}-{i}", target, False, lambda: np.zeros(4, np.float32))
            for target, n in counts.items() for i in range(n)]


def _picked(name: str, candidates, capacity: int, seed: int) -> Counter:
    context = SelectionContext(phase=1, rng=np.random.default_rng(seed), model=None,
                               features=None, domain="waveform", sample_rate=8000)
    chosen = build_sampler(name, {}).select(candidates, capacity, context)
    assert len(chosen) == len(set(chosen)) == capacity
    return Counter(candidates[i].target for i in chosen)


def test_every_class_keeps_its_share_where_random_lets_old_ones_vanish():
    assert "balanced-random" in sampler_names()
    # Two old classes with 5 exemplars each in memory, one new class with 200 clips.
    candidates = _candidates({0: 5, 1: 5, 2: 200})
    balanced = [_picked("balanced-random", candidates, 9, seed) for seed in range(20)]
    assert all(counts == {0: 3, 1: 3, 2: 3} for counts in balanced)
    plain = [_picked("random", candidates, 9, seed) for seed in range(20)]
    assert any(counts[0] == 0 or counts[1] == 0 for counts in plain)
