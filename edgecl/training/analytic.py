"""The host side of `--mode analytic`: embeddings of a phase's clips, the analytic head
(firmware_export.device.analytic) fit or updated on them, and that head folded into the run's
Linear head so testing, checkpoints and export see an ordinary model; the clips the head holds
(LearntClips), so a phase's bundle ships the run's own state (bundle_state).

With a random expansion the head is not linear in the embedding: the Linear head gets its least
squares stand-in on the learnt clips' embeddings (for the checkpoint and the bundle's model.onnx),
and the phase's test accuracy is the expanded head's own (expanded_accuracy).

The analytic head names its classes by the run's target index (as text): column j of its W is the
class whose target is int(labels[j]), whatever order the classes were learnt in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
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


@dataclass
class LearntClips:
    """Per clip the head holds: its key (the file's path), target, weight and float32 embedding
    (the model's own precision: the head learnt these very values, so forgetting is exact)."""

    keys: list[str] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def add(self, labelled: list, weights: np.ndarray, embeddings: np.ndarray) -> None:
        self.keys += [str(lc.clip.path) for lc in labelled]
        self.targets += [int(lc.target) for lc in labelled]
        self.weights += [float(w) for w in weights]
        new = np.asarray(embeddings, dtype=np.float32)
        self.embeddings = new if not self.embeddings.size else np.vstack([self.embeddings, new])

    def state(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "targets": list(self.targets),
                "weights": torch.tensor(self.weights, dtype=torch.float64),
                "embeddings": torch.from_numpy(self.embeddings.copy())}

    @classmethod
    def from_state(cls, saved: dict[str, Any] | None) -> LearntClips:
        if saved is None:  # a run saved before the clips were kept
            return cls()
        return cls(keys=[str(k) for k in saved["keys"]], targets=[int(t) for t in saved["targets"]],
                   weights=saved["weights"].tolist(), embeddings=saved["embeddings"].numpy())


def bundle_state(head: AnalyticHead, learnt: LearntClips, seen: list[str]):
    """The head (classes named by `seen`) and its clips as a bundle's state, the clips named by
    their files' sha256; the embedding model's sha256 is the exporter's to set."""
    from firmware_export.device.analytic_state import BundleState
    from firmware_export.device.learn import DEFAULT_CLASS_LIMIT
    from firmware_export.device.manifest import sha256_file

    named = copy.deepcopy(head)
    named.labels = [seen[int(label)] for label in head.labels]
    state = BundleState(head=named, backbone_sha256="",
                        class_limit=max(DEFAULT_CLASS_LIMIT, len(seen)))
    targets, weights = np.asarray(learnt.targets), np.asarray(learnt.weights)
    for label in head.labels:
        rows = np.flatnonzero(targets == int(label))
        state.add([sha256_file(learnt.keys[r]) for r in rows], seen[int(label)], weights[rows],
                  learnt.embeddings[rows])
    return state


def set_run_head(model, head: AnalyticHead, learnt: LearntClips) -> None:
    """The run's Linear head from the analytic head: folded, or with an expansion its least
    squares stand-in on the learnt clips' embeddings."""
    if not head.expansion:
        fold_into(model.head.fc, head)
        return
    z = learnt.embeddings.astype(np.float64)
    solution = np.linalg.lstsq(np.hstack([z, np.ones((len(z), 1))]), head.logits(z), rcond=None)[0]
    _set_rows(model.head.fc, head, solution[:-1], solution[-1])


@torch.no_grad()
def expanded_accuracy(model, head: AnalyticHead, data) -> np.ndarray:
    """Per clip of PhaseData `data`, whether the analytic head (with its expansion) predicts its
    target, on the model's embeddings."""
    embeddings = clip_embeddings(model, data, 128)
    targets = np.asarray([int(label) for label in head.labels])
    return targets[np.argmax(head.logits(embeddings), axis=1)] == data.targets.cpu().numpy()


def fold_into(linear: torch.nn.Linear, head: AnalyticHead) -> None:
    """Set `linear`'s rows of the head's classes to its folded weights: logits = z A + b."""
    _set_rows(linear, head, *head.folded())


def _set_rows(linear: torch.nn.Linear, head: AnalyticHead, a: np.ndarray, b: np.ndarray) -> None:
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
