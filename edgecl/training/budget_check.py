"""The check, before any training, that a run's MAC budget allows one optimizer step: a budget
too small would train nothing and end at chance with exit 0."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edgecl.errors import EdgeclError


def check_first_step(limit: int | None, phases: Sequence[Sequence], model, clip_samples: int, *,
                     batch_size: int, step_macs: Callable[[object, int], int],
                     steps: Sequence) -> None:
    """Raise EdgeclError naming the minimum when `limit` (--max-train-macs, None: no limit) is
    below one step of the first phase, or of the second with what the `steps` add to every step
    from then on (edgecl.steps.Step.min_extra_macs_per_clip). `phases`: the tasks of each phase;
    `step_macs(macs, extra)`: one step's MACs per clip with the model's ModelMacs `macs`."""
    from edgecl.budget.macs import ModelMacs

    if limit is None:
        return
    macs = ModelMacs.of_model(model, clip_samples)
    batch = min(batch_size, sum(len(task.train) for task in phases[0]))
    needed, detail = batch * step_macs(macs, 0), f"a batch of {batch} clips"
    costly = [step for step in steps if step.min_extra_macs_per_clip(macs)]
    if costly and len(phases) > 1:
        batch = min(batch_size, sum(len(task.train) for task in phases[1]))
        extra = sum(step.min_extra_macs_per_clip(macs) for step in costly)
        if batch * step_macs(macs, extra) > needed:
            needed = batch * step_macs(macs, extra)
            detail = f"a batch of {batch} clips with {' and '.join(s.cost_label for s in costly)}"
    if limit < needed:
        raise EdgeclError(f"--max-train-macs: {limit:,} allows no optimizer step; one step on "
                          f"{detail} costs {needed:,} MACs, so give at least that")
