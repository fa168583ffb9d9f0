"""Distillation from the previous phase's model: the model as it was after phase i-1,
frozen, is the teacher of phase i; the student is the model being trained.

- Output distillation: KL(softmax(teacher / T) || softmax(student_old / T)) x T^2 on the old
  classes' logits (Hinton et al. 2015; the T^2 keeps the gradient's size independent of T), as in
  LwF / iCaRL-style class-incremental learning.
- Feature distillation: 1 - cosine similarity of the teacher's and the student's embeddings (as in
  LUCIR), averaged over the batch.
- Adaptive weight: both weights scaled by the share of old classes n_old / n_seen, as the
  class-incremental multi-label work this project draws on does: the more of the seen classes are
  old, the more the old model's knowledge counts.

Both are computed on the whole training batch (new clips and replayed exemplars). There is no
teacher in phase 0 or in joint mode (nothing learned before). The teacher's forward pass per
training clip is a real cost on a device: the trainer adds its MACs to each step and its RAM to the
phase's training RAM (see `teacher_macs_per_clip`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from edgecl.precision import FP32


def output_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened class distributions, x T^2, averaged
    over the batch. `student_logits` are the old classes' logits only ([B, n_old])."""
    t = float(temperature)
    teacher = F.log_softmax(teacher_logits / t, dim=1)
    student = F.log_softmax(student_logits / t, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * (t * t)


def feature_distillation(student_embedding: torch.Tensor,
                         teacher_embedding: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of each clip's embeddings, averaged over the batch."""
    return (1.0 - F.cosine_similarity(student_embedding, teacher_embedding, dim=1)).mean()


def adaptive_scale(n_old: int, n_seen: int) -> float:
    """The share of old classes among the seen ones (n_old / n_seen)."""
    return n_old / n_seen if n_seen else 0.0


@dataclass(frozen=True)
class DistillSettings:
    """The distillation options of a run (RunConfig's distill_* fields)."""

    output: float = 0.0
    feature: float = 0.0
    temperature: float = 2.0
    adaptive: bool = False

    @classmethod
    def of(cls, config) -> DistillSettings:
        return cls(config.distill_output, config.distill_feature, config.distill_temperature,
                   config.distill_adaptive)

    @property
    def on(self) -> bool:
        return self.output > 0 or self.feature > 0

    def as_dict(self) -> dict[str, Any]:
        return {"output": self.output, "feature": self.feature, "temperature": self.temperature,
                "adaptive": self.adaptive}


class Distiller:
    """The frozen teacher of one phase and the distillation loss it adds to the student's.

    `teacher` is copied (the caller's model goes on training), put in eval mode (its BatchNorm
    uses the statistics it ended its phase with) and never gets gradients. `n_seen` is the number
    of classes the student learns in this phase; the teacher's head gives n_old. `precision` (an
    edgecl.precision.TrainingPrecision) runs the teacher's forward under the student's autocast;
    the losses are computed in float32.
    """

    def __init__(self, teacher, settings: DistillSettings, n_seen: int,
                 precision=None) -> None:
        self.teacher = copy.deepcopy(teacher).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.settings = settings
        self.precision = precision or FP32  # the teacher's forward runs as the student's
        self.n_old = int(self.teacher.head.n_classes)
        self.n_seen = int(n_seen)
        self.scale = adaptive_scale(self.n_old, self.n_seen) if settings.adaptive else 1.0
        self.output_weight = settings.output * self.scale
        self.feature_weight = settings.feature * self.scale

    def loss(self, logmel: torch.Tensor, student_logits: torch.Tensor,
             student_embedding: torch.Tensor) -> torch.Tensor:
        """The weighted distillation loss of one batch (the teacher runs on the same log-mels)."""
        with torch.no_grad(), self.precision.autocast():
            teacher_logits, teacher_embedding = self.teacher.forward_features(logmel)
        teacher_logits, teacher_embedding = teacher_logits.float(), teacher_embedding.float()
        total = student_logits.new_zeros(())
        if self.output_weight > 0:
            total = total + self.output_weight * output_distillation(
                student_logits[:, :self.n_old], teacher_logits, self.settings.temperature)
        if self.feature_weight > 0:
            total = total + self.feature_weight * feature_distillation(student_embedding,
                                                                       teacher_embedding)
        return total

    def record(self) -> dict[str, Any]:
        """This phase's distillation settings for results.json."""
        return {**self.settings.as_dict(), "teacher": True, "n_old": self.n_old,
                "scale": self.scale, "output_weight": self.output_weight,
                "feature_weight": self.feature_weight}


def teacher_macs_per_clip(macs) -> int:
    """Forward MACs of the teacher per training clip (a ModelMacs of the teacher): backbone and
    head; the log-mel front end is shared with the student's forward, so it costs nothing more."""
    return int(macs.backbone + macs.head)
