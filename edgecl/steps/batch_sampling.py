"""How a replay phase draws its batches from new clips and exemplars, as a step
(edgecl.training.batch_sampling); without a memory every phase draws uniformly."""

from __future__ import annotations

from typing import Any

from edgecl.steps.base import Step
from edgecl.steps.registry import register_step


@register_step
class BatchSampling(Step):
    name = "batch-sampling"
    order = 10
    fields = ("batch_sampling",)

    def __init__(self, sampling: str) -> None:
        self.sampling = sampling

    @classmethod
    def from_config(cls, config) -> BatchSampling | None:
        if not config.uses_memory or config.batch_sampling == "uniform":
            return None
        return cls(config.batch_sampling)

    def fit_options(self, run) -> dict[str, Any]:
        return {"sampling": self.sampling}
