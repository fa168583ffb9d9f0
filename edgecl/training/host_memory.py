"""A run's host memory plan, made before phase 0: the estimated peak RSS of its training
(edgecl.budget.host_ram), whether its blocks train checkpointed and whether the process returns
freed memory to the system (`--activation-checkpointing`), and the refusal of a run that cannot
keep under `--max-train-ram`."""

from __future__ import annotations

from edgecl.allocator import return_freed_memory
from edgecl.budget.host_ram import HostTrainRam, plan_training_memory, supports_checkpointing
from edgecl.budget.ram import current_rss_bytes


def plan_host_memory(run) -> HostTrainRam:
    """Estimate `run`'s training peak, turn checkpointing on (and return freed memory to the
    system) when the plan needs it, and raise a one-line EdgeclError when no plan fits the
    limit."""
    config = run.config
    estimate = plan_training_memory(
        run.model, config.batch_size, run.logmel_shape(), mode=config.activation_checkpointing,
        limit=config.max_train_ram, baseline=current_rss_bytes(),
        n_clips=len(run.split.train) + len(run.split.test), n_mels=config.n_mels)
    if supports_checkpointing(run.model):
        run.model.backbone.checkpoint_blocks = estimate.checkpointing
    if estimate.returns_memory:
        return_freed_memory()  # until the process's next run keeps freed memory again
    return estimate


def describe(estimate: HostTrainRam) -> str:
    """One line for train.log."""
    from edgecl.budget.units import format_bytes

    return (f"host memory: training estimated to peak at {format_bytes(estimate.total)} "
            f"(activation checkpointing {'on' if estimate.checkpointing else 'off'}"
            f"{', freed memory returned to the system' if estimate.returns_memory else ''}"
            f"{', caching allocator' if estimate.caching_allocator else ''})")
