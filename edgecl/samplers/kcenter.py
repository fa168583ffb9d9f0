"""kcenter: k-center greedy coreset selection (Sener & Savarese 2018), class balanced.

On L2-normalised model embeddings, each seen class keeps `capacity // seen_classes` exemplars
chosen farthest-first: the first at random (from the run's rng), then repeatedly the candidate
whose distance to its nearest chosen one is largest, so the kept set covers the class's embedding
cloud with the smallest radius the greedy rule finds. Slots left over (when the classes do not
divide the capacity) are filled by the same rule over every candidate. Memory and new clips
compete alike each phase; the embeddings come from the model trained in that phase.
"""

from __future__ import annotations

import numpy as np

from edgecl.samplers.base import Sampler, class_quota, indices_by_class, l2_normalise
from edgecl.samplers.registry import register_sampler


def farthest_first(points: np.ndarray, count: int, start: list[int]) -> list[int]:
    """Indices of `count` rows of `points`: `start`, then greedily the row farthest from its
    nearest chosen row (ties: the lowest index). Fewer when the rows run out."""
    chosen = list(start)[:count]
    if not chosen or count <= len(chosen):
        return chosen
    nearest = np.full(len(points), np.inf)
    for index in chosen:
        nearest = np.minimum(nearest, np.linalg.norm(points - points[index], axis=1))
    nearest[chosen] = -np.inf
    while len(chosen) < min(count, len(points)):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[pick], axis=1))
        nearest[chosen] = -np.inf
    return chosen


@register_sampler
class KCenterSampler(Sampler):
    name = "kcenter"

    def select(self, candidates, capacity, context):
        if capacity <= 0 or not candidates:
            return []
        points = l2_normalise(context.embeddings(candidates).double().numpy())
        groups = indices_by_class(candidates)
        quota = class_quota(capacity, len(groups))
        chosen: list[int] = []
        for target in sorted(groups):
            members = groups[target]
            if quota == 0:
                continue
            first = int(context.rng.integers(len(members)))
            chosen += [members[i] for i in farthest_first(points[members], quota, [first])]
        if not chosen:  # fewer slots than classes: start the global rule at random
            chosen = [int(context.rng.integers(len(candidates)))]
        return farthest_first(points, capacity, chosen)

    def update_macs(self, n_candidates, macs, *, clip_samples=0, sample_rate=16000,
                    features_cached=True):
        """One embedding (backbone forward) per candidate; the distances (~ kept x candidates x
        embedding dim) are orders of magnitude smaller and not counted."""
        return n_candidates * ((0 if features_cached else macs.frontend) + macs.backbone)
