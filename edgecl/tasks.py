"""Class-incremental task split: which classes arrive in which phase, with train/val/test clips.

Options follow the published code: `n_tasks`, `n_init_cls` (classes in the first task),
`n_cls_a_task` (classes in every later task) and `seed` (shuffles the class order unless
`class_order` is given). The tasks may use fewer classes than the dataset has (the first
`n_init_cls + (n_tasks - 1) * n_cls_a_task` of the order); clips of unused classes are dropped.

Labels are renumbered in arrival order (target = index in `class_order`), so a growing head just
appends rows. Each task's validation clips are held out from its training clips, stratified by
class and drawn by seed; test clips are never touched, so training never sees test data.

Few-shot phases (`shots` = K): every task after the first keeps K of each class's training clips,
drawn by seed after the validation hold-out (the validation clips are the same as without
`shots`); a class with K or fewer training clips keeps them all. Task 0 keeps all its clips.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from edgecl.data.records import Clip, DatasetSplit
from edgecl.errors import EdgeclError
from edgecl.limits import MAX_VAL_FRACTION, check_float, int_range

# Distinct random streams from one seed: the class order, the validation and the few-shot draws
# (one stream each, so `shots` leaves the order and the validation clips as they are).
_ORDER_STREAM, _VAL_STREAM, _SHOTS_STREAM = 0, 1, 2


@dataclass(frozen=True)
class LabelledClip:
    """A clip with its integer target (its class's position in the arrival order)."""

    clip: Clip
    target: int


@dataclass
class Task:
    """One phase: the classes new in it and their train, validation and test clips."""

    index: int
    classes: list[str]
    train: list[LabelledClip] = field(default_factory=list)
    val: list[LabelledClip] = field(default_factory=list)
    test: list[LabelledClip] = field(default_factory=list)


@dataclass
class TaskPlan:
    """The class arrival order and the tasks, in order."""

    class_order: list[str]
    tasks: list[Task]

    @property
    def n_classes(self) -> int:
        """Classes over all tasks."""
        return len(self.class_order)

    def tasks_seen(self, task_index: int) -> list[Task]:
        """The tasks that have arrived up to and including task `task_index`."""
        return self.tasks[:task_index + 1]

    def classes_seen(self, task_index: int) -> list[str]:
        """Classes that have arrived up to and including task `task_index`."""
        return [name for task in self.tasks_seen(task_index) for name in task.classes]


def _check_counts(n_tasks: int, n_init_cls: int, n_cls_a_task: int, n_available: int,
                  dataset: str) -> int:
    for option, value, minimum in (("--n-tasks", n_tasks, 1), ("--n-init-cls", n_init_cls, 1),
                                   ("--n-cls-a-task", n_cls_a_task, 1 if n_tasks > 1 else 0)):
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise EdgeclError(f"{option}: expected an integer >= {minimum}, got {value!r}")
    needed = n_init_cls + (n_tasks - 1) * n_cls_a_task
    if needed > n_available:
        raise EdgeclError(f"--n-init-cls {n_init_cls} + (--n-tasks {n_tasks} - 1) x --n-cls-a-task "
                          f"{n_cls_a_task} = {needed} classes, but {dataset} has only "
                          f"{n_available}")
    return needed


def _resolve_order(classes: list[str], class_order: list[str] | None, needed: int, seed: int,
                   dataset: str) -> list[str]:
    if class_order is None:
        rng = np.random.default_rng([seed, _ORDER_STREAM])
        return [classes[i] for i in rng.permutation(len(classes))[:needed]]
    known = set(classes)
    unknown = [name for name in class_order if name not in known]
    if unknown:
        raise EdgeclError(f"--class-order: class {unknown[0]!r} is not in {dataset} "
                          f"(classes: {', '.join(classes)})")
    duplicated = sorted({name for name in class_order if class_order.count(name) > 1})
    if duplicated:
        raise EdgeclError(f"--class-order: class {duplicated[0]!r} is listed more than once")
    if len(class_order) < needed:
        raise EdgeclError(f"--class-order: the tasks need {needed} classes, "
                          f"the order lists {len(class_order)}")
    return list(class_order[:needed])


def _class_positions(clips: list[LabelledClip]) -> list[list[int]]:
    """The positions in `clips` of each class's clips, classes by target."""
    by_target: dict[int, list[int]] = defaultdict(list)
    for position, item in enumerate(clips):
        by_target[item.target].append(position)
    return [by_target[target] for target in sorted(by_target)]


def _hold_out(clips: list[LabelledClip], val_fraction: float,
              rng: np.random.Generator) -> tuple[list[LabelledClip], list[LabelledClip]]:
    """Stratified split into (train, val): about `val_fraction` of each class, at least one
    validation clip per class when it has two or more, never its last training clip."""
    val_positions: set[int] = set()
    for members in _class_positions(clips):
        n_val = int(round(len(members) * val_fraction))
        if val_fraction > 0 and len(members) >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(members) - 1)
        val_positions.update(members[i] for i in rng.permutation(len(members))[:n_val])
    train = [item for position, item in enumerate(clips) if position not in val_positions]
    val = [item for position, item in enumerate(clips) if position in val_positions]
    return train, val


def _keep_shots(clips: list[LabelledClip], shots: int,
                rng: np.random.Generator) -> list[LabelledClip]:
    """`shots` clips of each class drawn by `rng` (all of a class with fewer), in their order."""
    kept: set[int] = set()
    for members in _class_positions(clips):
        kept.update(members[i] for i in rng.permutation(len(members))[:shots])
    return [item for position, item in enumerate(clips) if position in kept]


def short_of_shots(plan: TaskPlan, shots: int) -> list[tuple[int, str, int]]:
    """(task, class, training clips) of the classes of tasks >= 1 with fewer than `shots`
    training clips: few-shot phases keep all of theirs."""
    short = []
    for task in plan.tasks[1:]:
        counts = {name: 0 for name in task.classes}
        for item in task.train:
            counts[item.clip.label] += 1
        short += [(task.index, name, n) for name, n in counts.items() if n < shots]
    return short


def make_tasks(split: DatasetSplit, n_tasks: int, n_init_cls: int, n_cls_a_task: int, seed: int,
               class_order: list[str] | None = None, val_fraction: float = 0.1,
               shots: int | None = None) -> TaskPlan:
    """Divide `split` into class-incremental tasks (see the module docstring).

    Task 0 gets the first `n_init_cls` classes of the order, each later task the next
    `n_cls_a_task`; with `shots`, tasks >= 1 train on that many clips per class. The result
    depends only on the dataset, the options and `seed`.
    """
    # The same rule as RunConfig's, for callers that build tasks without a config.
    check_float("--val-fraction", val_fraction, 0.0, MAX_VAL_FRACTION, low_inclusive=True,
                what="a fraction of each task's training clips")
    needed = _check_counts(n_tasks, n_init_cls, n_cls_a_task, len(split.classes), split.name)
    order = _resolve_order(list(split.classes), class_order, needed, seed, split.name)
    target_of = {name: index for index, name in enumerate(order)}
    if shots is not None:  # RunConfig's rule, for callers without a config
        int_range("shots").check("--shots", shots)
    val_rng = np.random.default_rng([seed, _VAL_STREAM])
    shots_rng = np.random.default_rng([seed, _SHOTS_STREAM])

    tasks = []
    for index in range(n_tasks):
        start = 0 if index == 0 else n_init_cls + (index - 1) * n_cls_a_task
        stop = n_init_cls + index * n_cls_a_task
        names = order[start:stop]
        members = set(names)
        train_all = [LabelledClip(clip, target_of[clip.label])
                     for clip in split.train if clip.label in members]
        test = [LabelledClip(clip, target_of[clip.label])
                for clip in split.test if clip.label in members]
        if split.val:  # the dataset fixes the validation clips
            train = train_all
            val = [LabelledClip(clip, target_of[clip.label])
                   for clip in split.val if clip.label in members]
        else:
            train, val = _hold_out(train_all, val_fraction, val_rng)
        if shots is not None and index > 0:
            train = _keep_shots(train, shots, shots_rng)
        tasks.append(Task(index=index, classes=list(names), train=train, val=val, test=test))
    return TaskPlan(class_order=order, tasks=tasks)
