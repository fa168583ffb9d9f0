"""BiC's correction of the new classes' logits as a step (edgecl.training.bias_correction).

`in-loop` corrects the model the run goes on with, after the phase's training. `deployed`
corrects only the phase's tested, checkpointed and exported model: it keeps the uncorrected head
(the learner's), records the uncorrected model's test accuracy beside the corrected one and puts
the learner's head back after the export; the phase's state.pt keeps that head, so a resumed run
goes on from it."""

from __future__ import annotations

from typing import Any

from edgecl.steps.base import Phase, Step
from edgecl.steps.registry import register_step


@register_step
class BiasCorrection(Step):
    name = "bias-correction"
    order = 60
    fields = ("bias_correction",)

    def __init__(self, applied: str) -> None:
        self.applied = applied  # in-loop or deployed
        self.learner_head: dict[str, Any] | None = None  # deployed: the head the run goes on from

    @classmethod
    def from_config(cls, config) -> BiasCorrection | None:
        return None if config.bias_correction == "off" else cls(config.bias_correction)

    def after_fit(self, run, phase: Phase) -> None:
        if self.applied == "in-loop":
            self.correct(run, phase)

    def before_test(self, run, phase: Phase) -> None:
        """Deployed: correct the phase's model, keeping the learner's head and its accuracy."""
        from edgecl.device import cpu_state
        from edgecl.training import task_accuracy

        self.learner_head = None
        if self.applied != "deployed":
            return
        self.learner_head = cpu_state(run.model.head.state_dict())
        per_task, overall = task_accuracy(run.model, run.items.clip_data, phase.seen_tasks)
        if self.correct(run, phase):
            phase.record.details["bias_correction"].update(uncorrected_accuracy=overall,
                                                           uncorrected_task_accuracy=per_task)
        else:
            self.learner_head = None

    def after_export(self, run, phase: Phase) -> None:
        if self.learner_head is not None:
            run.model.head.load_state_dict(self.learner_head)

    def correct(self, run, phase: Phase) -> bool:
        """Fit the correction on the phase's validation clips and fold it into the head, recorded
        as `bias_correction`; False when there was nothing to correct (no old or no new classes,
        no clips)."""
        from edgecl.training.bias_correction import correct_bias
        from edgecl.training.phase_report import percent

        entry = correct_bias(run.model, run.validation_data(phase.seen_tasks), phase.n_old)
        if entry is None:
            return False
        entry["applied"] = self.applied
        phase.record.details["bias_correction"] = entry
        where = "the deployed model's" if self.applied == "deployed" else "the"
        run.log(f"  bias correction of {where} new classes' logits: alpha {entry['alpha']:.3f}, "
                f"beta {entry['beta']:+.3f}; validation {percent(entry['val_accuracy_before'])} "
                f"-> {percent(entry['val_accuracy_after'])} on {entry['val_clips']} clips")
        return True

    def state(self) -> dict[str, Any]:
        return {"learner_head": self.learner_head}

    def restore(self, run, payload: dict[str, Any]) -> None:
        if payload.get("learner_head") is not None:  # the checkpoint's head is corrected
            run.model.head.load_state_dict(payload["learner_head"])
