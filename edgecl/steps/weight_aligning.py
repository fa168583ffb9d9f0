"""Weight aligning after a phase's training, as a step (edgecl.training.weight_align): the run
goes on with the aligned head; the factor is recorded as `weight_align_gamma` (None in phase 0)."""

from __future__ import annotations

from edgecl.steps.base import Phase, Step
from edgecl.steps.registry import register_step


@register_step
class WeightAligning(Step):
    name = "weight-aligning"
    order = 50
    fields = ("weight_align",)

    @classmethod
    def from_config(cls, config) -> WeightAligning | None:
        return cls() if config.weight_align else None

    def after_fit(self, run, phase: Phase) -> None:
        from edgecl.training.weight_align import align_weights

        phase.record.details["weight_align_gamma"] = align_weights(run.model.head, phase.n_old)
