"""prototype: iCaRL herding on L2-normalised embeddings, `capacity // seen_classes` per class.

For each class, exemplars are chosen greedily so that the (normalised) mean of the chosen
embeddings stays closest to the class mean, as in the published code: at step j the candidate i
minimising || mu - normalise((phi_i + sum of chosen) / (j + 1)) || is taken. The class mean mu is
computed once, in the phase the class is learnt (from all of its clips then), and kept.

Old classes keep the first `quota` exemplars in their herding order (iCaRL's reduction). The
published code instead drops old exemplars at random when the quota shrinks.
"""

from __future__ import annotations

import numpy as np

from edgecl.samplers.base import Sampler, class_quota, indices_by_class, l2_normalise
from edgecl.samplers.registry import register_sampler


def herding_order(features: np.ndarray, mean: np.ndarray, count: int,
                  chosen_sum: np.ndarray | None = None, n_chosen: int = 0) -> list[int]:
    """Indices of `count` rows of `features` (already normalised) in herding order towards `mean`,
    continuing from `n_chosen` rows already chosen elsewhere whose sum is `chosen_sum`."""
    remaining = list(range(len(features)))
    chosen: list[int] = []
    total = (np.zeros(features.shape[1], dtype=np.float64) if chosen_sum is None
             else np.array(chosen_sum, dtype=np.float64))
    for step in range(min(count, len(features))):
        pool = features[remaining].astype(np.float64)
        means = l2_normalise((pool + total) / (n_chosen + step + 1))
        index = remaining.pop(int(np.argmin(np.linalg.norm(mean - means, axis=1))))
        chosen.append(index)
        total += features[index]
    return chosen


@register_sampler
class PrototypeSampler(Sampler):
    name = "prototype"

    def __init__(self) -> None:
        self.class_means: dict[int, np.ndarray] = {}  # target -> normalised mean when learnt

    def get_state(self):
        return {"class_means": {int(t): np.array(m) for t, m in self.class_means.items()}}

    def set_state(self, state):
        self.class_means = {int(t): np.asarray(m) for t, m in state["class_means"].items()}

    def select(self, candidates, capacity, context):
        groups = indices_by_class(candidates)
        quota = class_quota(capacity, len(groups))
        chosen: list[int] = []
        for target in sorted(groups):
            members = groups[target]
            new = [i for i in members if not candidates[i].in_memory]
            if not new:  # an old class: keep the head of its herding order
                chosen += members[:quota]
                continue
            features = l2_normalise(context.embeddings([candidates[i] for i in members])
                                    .double().numpy())
            if target not in self.class_means:
                self.class_means[target] = l2_normalise(features.mean(axis=0))
            order = herding_order(features, self.class_means[target], quota)
            chosen += [members[i] for i in order]
        return chosen

    def update_macs(self, n_candidates, macs, *, clip_samples=0, sample_rate=16000,
                    features_cached=True):
        """One embedding (backbone forward) per candidate; herding's distance sums (~ selected x
        class size x embedding dim) are orders of magnitude smaller and not counted."""
        return n_candidates * ((0 if features_cached else macs.frontend) + macs.backbone)
