"""What a training technique implements to take part in a phase: the Step interface and the Phase
it is handed.

A phase of edgecl.trainer.ContinualRun calls its steps' hooks in this order, each step in the
order of its `order` (lower first):

1. `before_phase(run, phase)`: before the head grows, the model is the one the last phase ended
   with (distillation copies its teacher here);
2. `trains(run, phase)`: False from any step and the phase runs no epoch of gradient training;
   `extra_macs_per_clip(run, phase)`: MACs the step adds to every training step per clip (the
   teacher's forward), charged to the phase's compute budget by the stop condition;
   `fit_options(run)` and `loss_term(phase)`: how edgecl.training.fit draws and augments its
   batches and what it adds to each batch's loss;
3. `charge_training(run, phase, train_macs, ram)`: after training, the step's share of the
   phase's training MACs and RAM (recorded in `phase.details`, the RAM returned);
4. `after_fit(run, phase)`: changes to the trained model the run goes on with (fine-tuning,
   weight aligning, an in-loop bias correction), before the memory update;
5. `before_test(run, phase)`: changes to the phase's tested, checkpointed and exported model
   only, after the memory update; `after_export(run, phase)` undoes them;
6. `state()` / `restore(run, payload)`: what the phase's state.pt keeps for a resumed run.

`run` is the ContinualRun: a step may read its `config`, `model`, `items`, `memory`, `split`,
`log`, `features`, `logmel_shape()`, `validation_data(tasks)` and `remaining_budget(phase)`, and
call `edgecl.training.fit` itself. Steps import torch inside their hooks, so the registry (read by
the CLI's --help and RunConfig) stays free of it.

A step owns the RunConfig fields in `fields` and may declare options of its own in `options`
(StepOption, the same declaration as a sampler's): those become RunConfig keywords and
`edgecl train` flags without touching either, and are left out of a run's identity at their
default, so existing runs keep their names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgecl.samplers.base import SamplerOption

#: An option a step declares itself: a RunConfig keyword and the flag --<name with dashes>.
StepOption = SamplerOption


@dataclass
class Phase:
    """One phase as the steps see it. `record` is its edgecl.results.PhaseRecord (`details`
    fills as the phase goes); `new_clips` its LabelledClips (`replayed`: the keys of the memory's
    exemplars it trained with); `macs` the model's ModelMacs once
    the head has grown; `step_macs_per_clip` what one training step costs per clip, steps'
    extras included."""

    index: int
    tasks: list
    seen_tasks: list
    record: Any
    new_clips: list = field(default_factory=list)
    macs: Any = None
    step_macs_per_clip: int = 0
    details: dict[str, Any] = field(default_factory=dict)  # steps' entries, after the base ones
    replayed: list[str] = field(default_factory=list)  # keys of the memory it trained with

    @property
    def seen(self) -> list[str]:
        return self.record.seen_classes

    @property
    def n_old(self) -> int:
        """Classes seen before this phase."""
        return len(self.seen) - sum(len(task.classes) for task in self.tasks)


class Step:
    """A training technique. Subclasses set `name` and `order`, say which options they own, build
    themselves from a RunConfig (None when it leaves them off) and override the hooks they need;
    @register_step (edgecl.steps.registry) makes them part of every run."""

    name: str = ""
    #: Position among the steps at every hook (lower first).
    order: int = 100
    #: RunConfig fields this step owns.
    fields: tuple[str, ...] = ()
    #: Options this step declares itself (RunConfig keywords and CLI flags).
    options: tuple[StepOption, ...] = ()
    #: What the step adds to a training step, for the budget check's message.
    cost_label: str = ""

    @classmethod
    def from_config(cls, config) -> Step | None:
        """The step of a run with `config`, or None when the config leaves it off."""
        raise NotImplementedError

    def before_phase(self, run, phase: Phase) -> None:
        """Before the head grows for the phase's new classes."""

    def trains(self, run, phase: Phase) -> bool:
        """False when the phase must not train by gradient (its fit runs no epoch)."""
        return True

    def extra_macs_per_clip(self, run, phase: Phase) -> int:
        """MACs the step adds per clip to every training step of the phase."""
        return 0

    def min_extra_macs_per_clip(self, macs) -> int:
        """A lower bound of `extra_macs_per_clip` from phase 1 on, for the model's ModelMacs
        `macs` before training (the budget check refuses a budget below one step)."""
        return 0

    def fit_options(self, run) -> dict[str, Any]:
        """Keyword arguments of edgecl.training.fit for the phase's training."""
        return {}

    def loss_term(self, phase: Phase) -> Callable | None:
        """`term(batch, logits, embedding) -> loss` added to every batch's loss, or None."""
        return None

    def charge_training(self, run, phase: Phase, train_macs: int | None, ram):
        """Record the step's share of the phase's training cost; returns the TrainRam with the
        step's RAM added."""
        return ram

    def after_fit(self, run, phase: Phase) -> None:
        """After training, on the model the run goes on with."""

    def before_test(self, run, phase: Phase) -> None:
        """After the memory update, on the phase's tested and exported model only."""

    def after_export(self, run, phase: Phase) -> None:
        """After the checkpoint and export: undo what `before_test` did to the run's model."""

    def state(self) -> dict[str, Any]:
        """Keyword arguments of edgecl.run_state.save_state this step adds."""
        return {}

    def restore(self, run, payload: dict[str, Any]) -> None:
        """Put back what `state` saved (payload: the phase's state.pt)."""
