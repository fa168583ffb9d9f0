"""Class-balanced fine-tuning after a phase as a step (edgecl.training.balanced_finetune): a few
epochs on the memory's old-class exemplars plus as many new clips per new class, within what is
left of the phase's compute budget; its steps, MACs and seconds are added to the phase's."""

from __future__ import annotations

import time
from typing import Any

from edgecl.steps.base import Phase, Step
from edgecl.steps.registry import register_step


@register_step
class BalancedFinetuning(Step):
    name = "balanced-finetuning"
    order = 40
    fields = ("balanced_epochs", "balanced_lr")

    def __init__(self, settings) -> None:
        self.settings = settings

    @classmethod
    def from_config(cls, config) -> BalancedFinetuning | None:
        from edgecl.training.balanced_finetune import BalancedSettings

        settings = BalancedSettings.of(config)
        return cls(settings) if settings.on and config.uses_memory else None

    def after_fit(self, run, phase: Phase) -> None:
        """Runs when there are old classes in the memory (phase >= 1)."""
        if run.memory is None or phase.index == 0 or len(run.memory) == 0:
            return
        items, targets, entry = self._balanced_set(run, phase)
        details = phase.record.details
        budget = run.remaining_budget(phase.record)
        if budget is None:
            entry["skipped"] = "the phase's compute budget is spent"
            details["balanced_finetune"] = entry
            run.log("  class-balanced fine-tuning skipped: the phase's compute budget is spent")
            return
        self._finetune(run, phase, run.items.data(items, targets), budget, entry)

    def _balanced_set(self, run, phase: Phase) -> tuple[list, list, dict[str, Any]]:
        """(items, targets, the `balanced_finetune` record so far) of the class-balanced set."""
        from edgecl.training.balanced_finetune import balanced_subset, subset_rng

        memory, config = run.memory, run.config
        quota = max(1, memory.capacity // len(phase.seen))
        new_targets = [lc.target for lc in phase.new_clips]
        slots, picks = balanced_subset([e.target for e in memory], new_targets, quota,
                                       subset_rng(config.seed, phase.index))
        items = ([run.items.exemplar(memory, s) for s in slots]
                 + [run.items.new_clip(phase.new_clips[i].clip, memory, config.code_new_clips)
                    for i in picks])
        targets = [memory.exemplars[s].target for s in slots] + [new_targets[i] for i in picks]
        entry = {**self.settings.as_dict(), "per_class": quota, "n_old": len(slots),
                 "n_new": len(picks), "steps": 0, "macs": 0, "seconds": 0.0}
        return items, targets, entry

    def _finetune(self, run, phase: Phase, data, budget, entry: dict[str, Any]) -> None:
        import torch

        from edgecl.training import PhaseMeter, fit

        config, settings, record = run.config, self.settings, phase.record
        meter = PhaseMeter(budget, step_macs_per_clip=run.step_macs(phase.macs, 0))
        val = run.validation_data(phase.seen_tasks)
        generator = torch.Generator().manual_seed(config.seed * 1000 + phase.index + 500)
        started = time.perf_counter()
        report = fit(run.model, data, val, epochs=settings.epochs, batch_size=config.batch_size,
                     lr=settings.lr, patience=0, bn_recal_clips=config.bn_recal_clips,
                     generator=generator, stop=meter,
                     name=f"phase {phase.index} balanced fine-tuning", precision=run.precision)
        seconds = time.perf_counter() - started
        run.features.forget_source("coded")
        entry.update(steps=meter.steps, macs=meter.macs, seconds=seconds,
                     best_epoch=report.best_epoch, best_val_accuracy=report.best_val_accuracy,
                     stopped_by=report.stopped_by)
        details = record.details
        if details.get("train_macs") is not None:
            entry["macs_share"] = meter.macs / (details["train_macs"] + meter.macs)
            details["train_macs"] += meter.macs
        details["train_steps"] = details.get("train_steps", 0) + meter.steps
        record.train_seconds += seconds
        details["balanced_finetune"] = entry
        run.log(f"  class-balanced fine-tuning on {entry['n_old']} exemplars + {entry['n_new']} "
                f"new clips ({entry['per_class']} per class), {report.epochs_run} epochs at lr "
                f"{settings.lr:g}: {meter.steps} steps in {seconds:.1f} s; {report.selection()}")
