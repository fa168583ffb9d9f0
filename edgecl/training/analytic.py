"""The host side of `--mode analytic`: embeddings of a phase's clips, the analytic head
(firmware_export.device.analytic) fit or updated on them, and that head folded into the run's
Linear head so testing, checkpoints and export see an ordinary model.

The analytic head names its classes by the run's target index (as text): column j of its W is the
class whose target is int(labels[j]), whatever order the classes were learnt in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from firmware_export.device.analytic import AnalyticHead, choose_gamma, fit_head


def clip_embeddings(model, data, batch_size: int) -> np.ndarray:
    """Embeddings [N, D] float64 of PhaseData `data`, in eval mode (BatchNorm's statistics as
    trained), without gradients."""
    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for indices in torch.split(torch.arange(len(data)), batch_size):
            parts.append(model.embed(data.features(indices.tolist())).double().cpu().numpy())
    model.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, model.embedding_dim))


def first_head(embeddings: np.ndarray, targets: np.ndarray, *, gamma: float | None,
               weighting: str, seed: int, expansion: int = 0) -> tuple[AnalyticHead, np.ndarray]:
    """The head fit on phase 0's clips (gamma None: chosen on a held-out share of them) and each
    clip's weight; an expansion's projection is drawn from `seed`."""
    labels = [str(int(t)) for t in targets]
    if gamma is None:
        gamma = choose_gamma(embeddings, labels, seed=seed, expansion=expansion,
                             expansion_seed=seed)
    return fit_head(embeddings, labels, gamma=gamma, weighting=weighting, expansion=expansion,
                    expansion_seed=seed)


def learn_classes(head: AnalyticHead, embeddings: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Add a later phase's clips, one class at a time in target order (the head's weighting);
    returns each clip's weight."""
    weights = np.zeros(len(embeddings))
    for target in sorted(set(int(t) for t in targets)):
        rows = targets == target
        weights[rows] = head.learn(embeddings[rows], str(target))
    return weights


def fold_into(linear: torch.nn.Linear, head: AnalyticHead) -> None:
    """Set `linear`'s rows of the head's classes to its folded weights: logits = z A + b."""
    a, b = head.folded()
    rows = [int(label) for label in head.labels]
    with torch.no_grad():
        linear.weight[rows] = torch.as_tensor(a.T, dtype=linear.weight.dtype,
                                              device=linear.weight.device)
        linear.bias[rows] = torch.as_tensor(b, dtype=linear.bias.dtype, device=linear.bias.device)


def head_state(head: AnalyticHead) -> dict[str, Any]:
    """The head as state.pt keeps it (tensors, strings, numbers and lists: weights_only loads)."""
    return {"mean": torch.from_numpy(head.mean.copy()), "std": torch.from_numpy(head.std.copy()),
            "r": torch.from_numpy(head.r.copy()), "w": torch.from_numpy(head.w.copy()),
            "gamma": head.gamma, "weighting": head.weighting, "labels": list(head.labels),
            "clips": list(head.clips), "mass": list(head.mass), "expansion": head.expansion,
            "expansion_seed": head.expansion_seed}


def head_from_state(saved: dict[str, Any]) -> AnalyticHead:
    return AnalyticHead(mean=saved["mean"].numpy(), std=saved["std"].numpy(),
                        gamma=float(saved["gamma"]), weighting=str(saved["weighting"]),
                        r=saved["r"].numpy(), w=saved["w"].numpy(),
                        labels=[str(v) for v in saved["labels"]],
                        clips=[int(v) for v in saved["clips"]],
                        mass=[float(v) for v in saved["mass"]],
                        expansion=int(saved.get("expansion", 0)),
                        expansion_seed=int(saved.get("expansion_seed", 0)))
