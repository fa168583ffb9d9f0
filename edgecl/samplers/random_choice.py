"""random: a uniform choice of `capacity` clips among the new clips and the current memory."""

from __future__ import annotations

from edgecl.samplers.base import Sampler
from edgecl.samplers.registry import register_sampler


@register_sampler
class RandomSampler(Sampler):
    name = "random"

    def select(self, candidates, capacity, context):
        return [int(i) for i in context.rng.permutation(len(candidates))[:capacity]]
