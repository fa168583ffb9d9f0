"""reservoir: classic reservoir sampling (Vitter's Algorithm R) over every clip ever streamed.

Every clip streamed so far ends up in the memory with the same probability capacity / seen. The
seen-count lives on the sampler for the whole run. The published code draws j from [0, seen) for
the clip after `seen` others; Algorithm R (used here) draws from [0, seen], which is what makes
the sample exactly uniform.
"""

from __future__ import annotations

from edgecl.samplers.base import Sampler
from edgecl.samplers.registry import register_sampler


@register_sampler
class ReservoirSampler(Sampler):
    name = "reservoir"

    def __init__(self) -> None:
        self.seen = 0  # clips streamed so far, over all phases

    def get_state(self):
        return {"seen": self.seen}

    def set_state(self, state):
        self.seen = int(state["seen"])

    def select(self, candidates, capacity, context):
        slots = [i for i, c in enumerate(candidates) if c.in_memory][:capacity]
        for index, candidate in enumerate(candidates):
            if candidate.in_memory:
                continue
            if len(slots) < capacity:
                slots.append(index)
            else:
                j = int(context.rng.integers(0, self.seen + 1))
                if j < capacity:
                    slots[j] = index
            self.seen += 1
        return slots
