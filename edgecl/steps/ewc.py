"""Elastic weight consolidation (EWC, Kirkpatrick et al., PNAS 2017), as a step.

After each phase the step measures how much every parameter mattered to it, the diagonal of the
empirical Fisher information on the phase's new clips (mean squared gradient of the
cross-entropy, in eval mode so BatchNorm's statistics stay as trained), and keeps the parameters'
values as anchors. In later phases every batch's loss gains `--ewc-lambda / 2 x sum F (p - p*)^2`,
so parameters important to earlier phases move less. Across phases the Fisher is merged as in the
class-incremental EWC of PyCIL: old x n_old / n_seen + new x n_new / n_seen; a grown head is
anchored on its old rows only.

Costs, charged like every step's: the penalty's two multiply-adds per anchored parameter per
step, spread over a full batch's clips, go into each training step's MACs (and so the compute
budget); the Fisher pass (one forward and backward per new clip) is recorded as `fisher_macs`
beside the memory update's MACs, outside the phase's training budget; the Fisher and the anchors
(two fp32 values per anchored parameter, kept across steps like Adam's moments) are added to
the training RAM's optimizer state. A resumed run restores both from the phase's state.pt.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

from edgecl.steps.base import Phase, Step, StepOption
from edgecl.steps.registry import register_step


@register_step
class ElasticWeightConsolidation(Step):
    name = "ewc"
    order = 95  # after every hook that changes the model the run goes on with
    options = (StepOption("ewc_lambda", 0.0, "Elastic weight consolidation: weight of a penalty "
                          "keeping each parameter near its value after the previous phase, by "
                          "its importance there (diagonal Fisher information; 0 = off).",
                          minimum=0.0),)

    def __init__(self, weight: float) -> None:
        self.weight = float(weight)
        self.fisher: dict[str, Any] = {}  # parameter name -> importance, as the anchor's shape
        self.anchor: dict[str, Any] = {}  # parameter name -> value after the last phase
        self.model = None

    @classmethod
    def from_config(cls, config) -> ElasticWeightConsolidation | None:
        return cls(config.ewc_lambda) if config.ewc_lambda > 0 else None

    def anchored(self) -> int:
        return sum(int(value.numel()) for value in self.anchor.values())

    def extra_macs_per_clip(self, run, phase: Phase) -> int:
        return math.ceil(2 * self.anchored() / run.config.batch_size)

    def loss_term(self, phase: Phase):
        return self.penalty if self.anchor else None

    def penalty(self, batch=None, logits=None, embedding=None):
        """`weight / 2 x sum F (p - p*)^2` over the anchored parameters (the loss-term call)."""
        total = 0.0
        for name, parameter in self.model.named_parameters():
            if name in self.anchor:
                anchor = self.anchor[name]
                total = total + (self.fisher[name] * (parameter[:len(anchor)] - anchor)
                                 .pow(2)).sum()
        return self.weight / 2 * total

    def before_phase(self, run, phase: Phase) -> None:
        self.model = run.model

    def charge_training(self, run, phase: Phase, train_macs: int | None, ram):
        kept = 8 * self.anchored()  # fp32 Fisher and anchor per parameter
        phase.details["ewc"] = {"lambda": self.weight, "anchored_parameters": self.anchored(),
                                "penalty_macs_per_clip": self.extra_macs_per_clip(run, phase),
                                "ram_bytes": kept}
        return replace(ram, optimizer_state=ram.optimizer_state + kept)

    def after_fit(self, run, phase: Phase) -> None:
        """Measure this phase's Fisher, merge it with the earlier phases' and re-anchor."""
        from edgecl.budget.macs import train_step_macs

        started = time.perf_counter()
        data = run.items.clip_data(phase.new_clips)
        fisher = self._fisher(run.model, data, run.config.batch_size)
        n_seen, n_old = len(phase.seen), phase.n_old
        for name, value in fisher.items():
            old = self.fisher.get(name)
            if old is not None:
                rows = len(old)
                value[:rows] = old * (n_old / n_seen) + value[:rows] * (1 - n_old / n_seen)
        self.fisher = fisher
        self.anchor = {name: parameter.detach().clone()
                       for name, parameter in run.model.named_parameters() if name in fisher}
        phase.record.details["ewc"].update(
            fisher_clips=len(data), fisher_seconds=time.perf_counter() - started,
            fisher_macs=train_step_macs(phase.macs, len(data),
                                        features_cached=run.config.feature_cache))

    @staticmethod
    def _fisher(model, data, batch_size: int) -> dict[str, Any]:
        """Mean squared gradient of the cross-entropy per parameter over `data`, in eval mode."""
        import torch
        from torch.nn import functional as F

        was_training = model.training
        model.eval()
        sums: dict[str, Any] = {}  # parameters the loss reaches (not the cached front end's)
        for indices in torch.split(torch.arange(len(data)), batch_size):
            model.zero_grad(set_to_none=True)
            logits = model.forward_features(data.features(indices.tolist()))[0]
            F.cross_entropy(logits, data.targets[indices]).backward()
            for name, parameter in model.named_parameters():
                if parameter.grad is not None:
                    square = parameter.grad.detach().pow(2) * len(indices)
                    sums[name] = sums[name] + square if name in sums else square
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        return {name: total / max(1, len(data)) for name, total in sums.items()}

    def state(self) -> dict[str, Any]:
        return {"ewc": {"fisher": {k: v.cpu() for k, v in self.fisher.items()},
                        "anchor": {k: v.cpu() for k, v in self.anchor.items()}}}

    def restore(self, run, payload: dict[str, Any]) -> None:
        saved = payload.get("ewc") or {}
        device = next(run.model.parameters()).device
        self.fisher = {k: v.to(device) for k, v in (saved.get("fisher") or {}).items()}
        self.anchor = {k: v.to(device) for k, v in (saved.get("anchor") or {}).items()}
