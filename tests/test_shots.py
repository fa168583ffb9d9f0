"""Few-shot phases (--shots K): K training clips per new class after phase 0, drawn by seed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from run_helpers import small_run_options

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.data.records import Clip, build_split
from edgecl.errors import EdgeclError
from edgecl.report.aggregate import method_label
from edgecl.run_folder import load_plan
from edgecl.tasks import make_tasks
from edgecl.trainer import train

CLASSES = [f"class{i}" for i in range(6)]


def _split(n_train: int = 20):
    """An in-memory dataset of six classes (the task split never opens files)."""
    train_clips = [Clip(Path(f"/data/{c}/train{i}.wav"), c, "train")
                   for c in CLASSES for i in range(n_train)]
    test = [Clip(Path(f"/data/{c}/test{i}.wav"), c, "test") for c in CLASSES for i in range(3)]
    return build_split("toy", train_clips, test, 16000, 1.0, source="toy")


def _per_class(clips) -> Counter:
    return Counter(item.clip.label for item in clips)


def _train_paths(plan) -> list[set]:
    return [{item.clip.path for item in task.train} for task in plan.tasks]


def test_later_phases_keep_k_clips_per_class_and_phase_zero_keeps_all():
    split = _split(n_train=20)
    full = make_tasks(split, 3, 2, 2, seed=4, val_fraction=0.25)
    few = make_tasks(split, 3, 2, 2, seed=4, val_fraction=0.25, shots=3)
    assert few.class_order == full.class_order
    assert few.tasks[0].train == full.tasks[0].train  # 15 per class: all of them
    assert set(_per_class(full.tasks[0].train).values()) == {15}
    for task, whole in zip(few.tasks[1:], full.tasks[1:], strict=True):
        assert _per_class(task.train) == {name: 3 for name in task.classes}
        assert {i.clip.path for i in task.train} <= {i.clip.path for i in whole.train}
    # The validation clips are held out first, as without --shots, and never trained on.
    assert [t.val for t in few.tasks] == [t.val for t in full.tasks]
    for task in few.tasks:
        assert not {i.clip.path for i in task.train} & {i.clip.path for i in task.val}


def test_the_seed_draws_the_clips_reproducibly():
    split = _split(n_train=20)

    def drawn(seed):  # the same classes and no hold-out: only the few-shot draw varies
        return _train_paths(make_tasks(split, 3, 2, 2, seed=seed, class_order=CLASSES,
                                       val_fraction=0.0, shots=2))

    assert drawn(7)[0] == drawn(8)[0]

    assert drawn(7) == drawn(7)
    assert drawn(7)[1:] != drawn(8)[1:]


def test_k_above_a_class_s_clips_keeps_them_all():
    split = _split(n_train=4)  # 3 training clips per class after the hold-out
    full = make_tasks(split, 3, 2, 2, seed=0)
    few = make_tasks(split, 3, 2, 2, seed=0, shots=50)
    assert [t.train for t in few.tasks] == [t.train for t in full.tasks]


def test_bad_shots_are_one_line_errors():
    with pytest.raises(EdgeclError, match="--shots"):
        make_tasks(_split(), 3, 2, 2, seed=0, shots=0)
    with pytest.raises(EdgeclError, match="--shots: expected an integer"):
        RunConfig(shots=-1)
    with pytest.raises(EdgeclError, match="--shots: joint mode"):
        RunConfig(mode="joint", shots=5)


def test_joint_refuses_shots_on_the_command_line(tmp_path):
    result = CliRunner().invoke(main, ["train", "--mode", "joint", "--shots", "5",
                                       "--workspace", str(tmp_path), "--quiet"])
    assert result.exit_code != 0
    assert "--shots: joint mode" in result.output
    assert list(tmp_path.iterdir()) == []


def test_run_names_change_only_when_shots_are_set():
    plain = RunConfig()
    assert RunConfig(shots=None).default_exp_name() == plain.default_exp_name()
    assert "shots" not in plain.identity()
    few = RunConfig(shots=5)
    assert few.identity()["shots"] == 5
    assert few.identity_hash() != plain.identity_hash()
    assert "-shots5-seed3-" in few.default_exp_name()
    assert RunConfig(shots=20).default_exp_name() != few.default_exp_name()
    assert method_label(RunConfig(mode="finetune", shots=5).to_dict()) == "finetune-shots5"
    assert method_label(RunConfig(mode="finetune").to_dict()) == "finetune"


def test_plan_of_a_run_applies_shots(six_class_manifest):
    # Six training clips per class: one held out for validation, five to train on.
    config, _, plan = load_plan(RunConfig(**small_run_options(six_class_manifest, shots=2)))
    assert config.shots == 2
    assert [sorted(_per_class(t.train).values()) for t in plan.tasks] == [[5, 5], [2, 2], [2, 2]]


@pytest.mark.parametrize("mode", ["finetune", "replay"])
def test_a_run_trains_later_phases_on_k_clips(six_class_manifest, tmp_path, mode):
    options = small_run_options(six_class_manifest, workspace=str(tmp_path), mode=mode,
                                shots=2, epochs=1, n_tasks=2, n_cls_a_task=4)
    results = train(RunConfig(**options))
    n_train = [phase["n_train"] for phase in results["phases"]]
    # Phase 0 keeps its two classes' five clips each; phase 1 has four new classes of two, with
    # replay the memory's seven exemplars too.
    assert n_train == [10, 8 if mode == "finetune" else 8 + 7]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "few-shot: 2 training clips per new class" in log
    assert json.loads((tmp_path / "run" / "results.json").read_text())["config"]["shots"] == 2


def test_the_log_names_classes_with_fewer_clips_than_k(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, workspace=str(tmp_path), mode="finetune",
                                shots=9, epochs=1, n_tasks=2, n_cls_a_task=4)
    results = train(RunConfig(**options))
    log = (tmp_path / "run" / "train.log").read_text()
    short = ", ".join(f"{name!r} 5 (phase 1)" for name in results["tasks"][1])
    assert f"--shots 9 is more than the training clips of 4 classes, which keep all: {short}\n" \
        in log
    assert [phase["n_train"] for phase in results["phases"]] == [10, 20]
