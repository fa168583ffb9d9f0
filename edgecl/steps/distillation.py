"""Distillation from the previous phase's model as a step (edgecl.training.distill): the teacher
is copied before the head grows, its loss is added to every batch, and its forward pass is
charged to the phase: its MACs to every training step, its weights and activations to the
training RAM."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edgecl.steps.base import Phase, Step
from edgecl.steps.registry import register_step


@register_step
class Distillation(Step):
    name = "distillation"
    order = 30
    fields = ("distill_output", "distill_feature", "distill_temperature", "distill_adaptive")
    cost_label = "the distillation teacher's forward"

    def __init__(self, settings) -> None:
        self.settings = settings
        self.distiller = None  # the phase's teacher (none in phase 0)
        self.teacher_macs = 0  # its forward MACs per training clip

    @classmethod
    def from_config(cls, config) -> Distillation | None:
        from edgecl.training.distill import DistillSettings

        settings = DistillSettings.of(config)
        return cls(settings) if settings.on else None

    def before_phase(self, run, phase: Phase) -> None:
        """The frozen copy of the model as it ended the previous phase (restored from its
        checkpoint on resume); none in phase 0 (joint has only that)."""
        from edgecl.training.distill import Distiller

        self.distiller = None if phase.index == 0 else Distiller(run.model, self.settings,
                                                                  len(phase.seen), run.precision)

    def extra_macs_per_clip(self, run, phase: Phase) -> int:
        from edgecl.budget.macs import ModelMacs
        from edgecl.training.distill import teacher_macs_per_clip

        self.teacher_macs = 0 if self.distiller is None else teacher_macs_per_clip(
            ModelMacs.of_model(self.distiller.teacher, run.split.clip_samples))
        return self.teacher_macs

    def min_extra_macs_per_clip(self, macs) -> int:
        from edgecl.training.distill import teacher_macs_per_clip

        return teacher_macs_per_clip(macs)  # the heads grow a little each phase

    def loss_term(self, phase: Phase):
        return None if self.distiller is None else self.distiller.loss

    def charge_training(self, run, phase: Phase, train_macs: int | None, ram):
        """The phase's `distill` record: settings and the teacher's MACs and RAM."""
        if self.distiller is None:
            phase.details["distill"] = {**self.settings.as_dict(), "teacher": False,
                                        "teacher_train_macs": 0, "teacher_macs_share": 0.0,
                                        "teacher_ram_bytes": 0, "teacher_ram_share": 0.0}
            return ram
        record, ram = self._teacher_costs(run, phase.step_macs_per_clip, train_macs, ram)
        phase.details["distill"] = record
        distiller = self.distiller
        run.log(f"  distillation from phase {phase.index - 1}'s model on {distiller.n_old} old "
                f"classes (weights output {distiller.output_weight:g}, feature "
                f"{distiller.feature_weight:g}): teacher {_share(record['teacher_macs_share'])} "
                f"of the training MACs, {_share(record['teacher_ram_share'])} of the training "
                f"RAM")
        return ram

    def _teacher_costs(self, run, per_clip: int, train_macs: int | None,
                       ram) -> tuple[dict[str, Any], Any]:
        from edgecl.budget.ram import device_inference_ram

        teacher_train_macs = share = None
        if train_macs is not None:
            # A step on B clips costs B x per_clip MACs: train_macs / per_clip clips were trained.
            teacher_train_macs = train_macs // per_clip * self.teacher_macs
            share = teacher_train_macs / train_macs if train_macs else 0.0
        teacher_ram = device_inference_ram(
            self.distiller.teacher, run.config.batch_size, run.logmel_shape(),
            forward=lambda model, batch: model.forward_features(batch))
        ram = replace(ram, teacher=teacher_ram.total)
        record = {**self.distiller.record(), "teacher_macs_per_clip": self.teacher_macs,
                  "teacher_train_macs": teacher_train_macs, "teacher_macs_share": share,
                  "teacher_ram_bytes": teacher_ram.total,
                  "teacher_ram_weights_bytes": teacher_ram.weights,
                  "teacher_ram_activations_bytes": teacher_ram.activations,
                  "teacher_ram_share": teacher_ram.total / ram.total}
        return record, ram


def _share(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.1f}%"
