"""Weight aligning (Zhao et al., CVPR 2020): after a phase, rescale the new classes' head weights to
the old classes' mean norm. A classifier trained on many new clips and few replayed ones grows
larger weight vectors for the new classes and favours them; aligning the norms removes that bias
at no training cost (one multiply per weight of the new rows). Old rows are not touched."""

from __future__ import annotations

import torch


def align_weights(head, n_old: int) -> float | None:
    """Scale rows n_old.. of `head`'s weight matrix so their mean L2 norm equals rows ..n_old's.

    Returns the factor applied, or None when there are no old or no new classes (phase 0).
    Biases are left as they are, as in the published method.
    """
    weight = head.fc.weight
    if n_old <= 0 or n_old >= weight.shape[0]:
        return None
    with torch.no_grad():
        old = weight[:n_old].norm(dim=1).mean()
        new = weight[n_old:].norm(dim=1).mean()
        if not float(new) > 0:
            return None
        gamma = old / new
        weight[n_old:] *= gamma
    return float(gamma)
