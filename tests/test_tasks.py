"""Class-incremental task split: arrival order, renumbering, validation hold-out, bad options."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edgecl.data.records import Clip, build_split
from edgecl.errors import EdgeclError
from edgecl.tasks import make_tasks

CLASSES = [f"class{i:02d}" for i in range(10)]


def _split(n_train: int = 20, n_test: int = 5, classes=CLASSES):
    """An in-memory dataset (the task split never opens files)."""
    train = [Clip(Path(f"/data/{c}/train{i}.wav"), c, "train")
             for c in classes for i in range(n_train)]
    test = [Clip(Path(f"/data/{c}/test{i}.wav"), c, "test") for c in classes for i in range(n_test)]
    return build_split("toy", train, test, 16000, 1.0, source="toy")


def test_tasks_take_classes_in_arrival_order_and_renumber_them():
    plan = make_tasks(_split(), n_tasks=4, n_init_cls=4, n_cls_a_task=2, seed=0)
    assert sorted(plan.class_order) == CLASSES and plan.n_classes == 10
    assert [len(task.classes) for task in plan.tasks] == [4, 2, 2, 2]
    assert [name for task in plan.tasks for name in task.classes] == plan.class_order
    assert plan.classes_seen(1) == plan.class_order[:6]
    for task in plan.tasks:
        for item in task.train + task.val + task.test:
            assert item.target == plan.class_order.index(item.clip.label)
            assert item.clip.label in task.classes
    # Targets of task k start where task k-1 stopped: a growing head just appends.
    assert sorted({item.target for item in plan.tasks[2].train}) == [6, 7]


def test_same_seed_same_plan_different_seed_different_order():
    split = _split()
    first = make_tasks(split, 5, 2, 2, seed=3)
    again = make_tasks(split, 5, 2, 2, seed=3)
    assert first.class_order == again.class_order
    assert [t.val for t in first.tasks] == [t.val for t in again.tasks]
    orders = {tuple(make_tasks(split, 5, 2, 2, seed=s).class_order) for s in range(5)}
    assert len(orders) == 5
    assert first.class_order != sorted(CLASSES)


def test_explicit_class_order_is_used():
    order = list(reversed(CLASSES))
    plan = make_tasks(_split(), 3, 2, 3, seed=0, class_order=order)
    assert plan.class_order == order[:8]
    assert plan.tasks[0].classes == ["class09", "class08"]


def test_validation_is_stratified_and_comes_only_from_training_clips():
    split = _split(n_train=20, n_test=5)
    test_paths = {clip.path for clip in split.test}
    plan = make_tasks(split, 5, 2, 2, seed=1, val_fraction=0.25)
    for task in plan.tasks:
        val_counts = Counter(item.clip.label for item in task.val)
        train_counts = Counter(item.clip.label for item in task.train)
        assert val_counts == {name: 5 for name in task.classes}
        assert train_counts == {name: 15 for name in task.classes}
        val_paths = {item.clip.path for item in task.val}
        train_paths = {item.clip.path for item in task.train}
        assert val_paths.isdisjoint(train_paths) and val_paths.isdisjoint(test_paths)
        assert {item.clip.path for item in task.test} == {
            clip.path for clip in split.test if clip.label in task.classes}
    other_seed = make_tasks(split, 5, 2, 2, seed=2, val_fraction=0.25,
                            class_order=plan.class_order)
    assert ({i.clip.path for i in other_seed.tasks[0].val}
            != {i.clip.path for i in plan.tasks[0].val})


def test_small_classes_keep_a_training_clip_and_get_one_validation_clip():
    plan = make_tasks(_split(n_train=2, n_test=1), 1, 3, 0, seed=0, val_fraction=0.1)
    counts = Counter(item.clip.label for item in plan.tasks[0].val)
    assert counts == {name: 1 for name in plan.tasks[0].classes}
    assert len(plan.tasks[0].train) == 3
    no_val = make_tasks(_split(n_train=2, n_test=1), 1, 3, 0, seed=0, val_fraction=0.0)
    assert no_val.tasks[0].val == [] and len(no_val.tasks[0].train) == 6


def test_fewer_classes_than_the_dataset_uses_a_subset():
    split = _split()
    plan = make_tasks(split, 3, 2, 2, seed=0)
    used = set(plan.class_order)
    assert len(used) == 6
    every_clip = [item.clip for task in plan.tasks for item in task.train + task.val + task.test]
    assert {clip.label for clip in every_clip} == used
    assert len(every_clip) == 6 * 25


@pytest.mark.parametrize("options, expected", [
    (dict(n_tasks=5, n_init_cls=4, n_cls_a_task=2), r"= 12 classes, but toy has only 10"),
    (dict(n_tasks=0, n_init_cls=2, n_cls_a_task=2), r"--n-tasks: expected an integer >= 1"),
    (dict(n_tasks=2, n_init_cls=0, n_cls_a_task=2), r"--n-init-cls: expected an integer >= 1"),
    (dict(n_tasks=2, n_init_cls=2, n_cls_a_task=0), r"--n-cls-a-task: expected an integer >= 1"),
    (dict(n_tasks=2, n_init_cls=2, n_cls_a_task=2, class_order=["class01", "nope"]),
     r"--class-order: class 'nope' is not in toy"),
    (dict(n_tasks=2, n_init_cls=2, n_cls_a_task=2, class_order=["class01", "class01", "class02"]),
     r"--class-order: class 'class01' is listed more than once"),
    (dict(n_tasks=2, n_init_cls=2, n_cls_a_task=2, class_order=["class01", "class02"]),
     r"--class-order: the tasks need 4 classes, the order lists 2"),
    (dict(n_tasks=2, n_init_cls=2, n_cls_a_task=2, val_fraction=1.0), r"--val-fraction"),
    (dict(n_tasks=2, n_init_cls=2, n_cls_a_task=2, val_fraction=0.95),
     r"--val-fraction: expected a fraction of each task's training clips in \[0, 0.9\]"),
])
def test_bad_options_are_clear_errors(options, expected):
    with pytest.raises(EdgeclError, match=expected):
        make_tasks(_split(), seed=0, **options)
