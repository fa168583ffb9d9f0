"""Augmentation of every training batch of a phase, as a step (edgecl.training.augment)."""

from __future__ import annotations

from typing import Any

from edgecl.steps.base import Step
from edgecl.steps.registry import register_step


@register_step
class Augmentation(Step):
    name = "augmentation"
    order = 20
    fields = ("augment",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    @classmethod
    def from_config(cls, config) -> Augmentation | None:
        return None if config.augment == "none" else cls(config.augment)

    def fit_options(self, run) -> dict[str, Any]:
        return {"augment": self.kind}
