"""balanced-random: per seen class an equal share of the memory drawn at random (then random
leftovers). The published `random` draws from the union, so an old class can vanish from a small
memory; this is the class-balanced baseline the other samplers should be compared with."""

from __future__ import annotations

from edgecl.samplers.base import Sampler, balanced_random
from edgecl.samplers.registry import register_sampler


@register_sampler
class BalancedRandomSampler(Sampler):
    name = "balanced-random"

    def select(self, candidates, capacity, context):
        return balanced_random(candidates, capacity, context)
