"""The replay memory's refill after a phase's training (edgecl.memory_update), as the last step
that changes the run's model or memory: after fine-tuning and in-loop corrections, before a
deployed correction. Without a memory it records that none was used (or leaves what a step
recorded there: the analytic head's state and update)."""

from __future__ import annotations

from edgecl.steps.base import Phase, Step
from edgecl.steps.registry import register_step


@register_step
class MemoryRefill(Step):
    name = "memory-refill"
    order = 90

    @classmethod
    def from_config(cls, config) -> MemoryRefill:
        return cls()

    def after_fit(self, run, phase: Phase) -> None:
        from edgecl.memory_update import update_memory
        from edgecl.results import count_range

        record, memory = phase.record, run.memory
        if memory is None:  # keeps what a step's own state recorded there (the analytic head)
            for key in ("memory_bytes", "memory_exemplars", "memory_update_macs"):
                record.details.setdefault(key, None)
            return
        update = update_memory(
            memory, run.sampler, run.items, phase.new_clips, phase=phase.index, rng=run.rng,
            model=run.model, model_macs=phase.macs, sample_rate=run.split.sample_rate,
            clip_samples=run.split.clip_samples, exemplar_shape=run.exemplar_shape(memory.format),
            budget_bytes=run.config.memory_bytes)
        record.memory_update_seconds = update.seconds
        record.details.update(update.costs)
        record.memory_balance = memory.class_balance(run.plan.class_order)
        run.log(f"  memory update by {run.sampler.name}: {len(memory)}/{memory.capacity} "
                f"exemplars in {record.memory_update_seconds:.2f} s; per class "
                f"{count_range(record.memory_balance)}")
