"""Class-balanced fine-tuning after each phase (edgecl.training.balanced_finetune)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from run_helpers import small_run_options
from test_resume import comparable

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.trainer import train
from edgecl.training.balanced_finetune import balanced_subset, subset_rng


def _untimed(results: dict) -> dict:
    out = comparable(results)
    for phase in out["phases"]:
        if "balanced_finetune" in phase:
            phase["balanced_finetune"] = {k: v for k, v in phase["balanced_finetune"].items()
                                          if k != "seconds"}
    return out


def test_balanced_subset_takes_quota_per_class_old_from_memory_new_at_random():
    memory = [0, 1, 0, 1, 0, 1, 0, 2]  # class 2 is new this phase: its slot is not used
    new = [2, 3, 2, 3, 2, 3, 2, 3, 2]
    slots, clips = balanced_subset(memory, new, 3, np.random.default_rng(0))
    assert slots == [0, 1, 2, 3, 4, 5]  # the first three of each old class, in slot order
    assert sorted(new[i] for i in clips) == [2, 2, 2, 3, 3, 3]
    assert len(set(clips)) == 6
    again = balanced_subset(memory, new, 3, np.random.default_rng(0))
    assert again == (slots, clips)
    others = {tuple(balanced_subset(memory, new, 3, np.random.default_rng(s))[1]) for s in range(8)}
    assert len(others) > 1  # the new clips are a random draw
    # A class with fewer clips than the quota gives all it has.
    assert balanced_subset([0], [1, 1], 5, np.random.default_rng(0)) == ([0], [0, 1])


def test_subset_rng_depends_on_seed_and_phase_only():
    draw = subset_rng(3, 1).integers(0, 1 << 30, 4)
    assert (draw == subset_rng(3, 1).integers(0, 1 << 30, 4)).all()
    assert not (draw == subset_rng(3, 2).integers(0, 1 << 30, 4)).all()
    assert not (draw == subset_rng(4, 1).integers(0, 1 << 30, 4)).all()


def test_fine_tuning_steps_and_macs_are_counted_in_the_phase(six_class_manifest, tmp_path):
    # patience 0 and reservoir (which runs no model): the main training takes the same steps on
    # the same clips with the option on or off, so the difference is the fine-tuning alone.
    options = small_run_options(six_class_manifest, patience=0, mem_manage="reservoir")
    plain = train(RunConfig(**options, workspace=str(tmp_path / "plain")))
    tuned = train(RunConfig(**options, balanced_epochs=2, workspace=str(tmp_path / "tuned")))
    assert "balanced_finetune" not in tuned["phases"][0]
    for phase in (1, 2):
        before, after = plain["phases"][phase], tuned["phases"][phase]
        entry = after["balanced_finetune"]
        seen = len(after["seen_classes"])
        assert entry["per_class"] == 7 // seen
        assert entry["n_new"] == 2 * entry["per_class"]  # two new classes, quota each
        assert 0 < entry["n_old"] <= (seen - 2) * entry["per_class"]
        per_clip = before["train_macs"] // (before["n_train"] * before["epochs_run"])
        clips = entry["n_old"] + entry["n_new"]
        assert entry["macs"] == 2 * clips * per_clip
        assert after["train_macs"] == before["train_macs"] + entry["macs"]
        assert after["train_steps"] == before["train_steps"] + entry["steps"]
        assert entry["macs_share"] == pytest.approx(entry["macs"] / after["train_macs"])
        assert entry["lr"] == 1e-4 and entry["epochs"] == 2


def test_fine_tuning_changes_the_model_and_reproduces(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, mem_manage="uncertainty",
                                uncert_metric="noisytune", metric_k=2, balanced_epochs=2,
                                balanced_lr=1e-2)
    first = train(RunConfig(**options, workspace=str(tmp_path / "one")))
    second = train(RunConfig(**options, workspace=str(tmp_path / "two")))
    assert _untimed(first) == _untimed(second)
    plain = train(RunConfig(**{**options, "balanced_epochs": 0}, workspace=str(tmp_path / "p")))
    # Phase 0 has no old classes and is not fine-tuned; later phases are, and test differently.
    assert first["accuracy_matrix"][0] == plain["accuracy_matrix"][0]
    assert first["phases"][1]["train_macs"] > plain["phases"][1]["train_macs"]
    assert first["accuracy_matrix"][1:] != plain["accuracy_matrix"][1:]
    text = (tmp_path / "one" / "run" / "config.toml").read_text()
    assert "balanced-epochs = 2" in text and "balanced-lr = 0.01" in text


def test_fine_tuning_stays_within_the_step_budget(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, patience=0, mem_manage="reservoir",
                                balanced_epochs=3)
    free = train(RunConfig(**options, workspace=str(tmp_path / "free")))
    main_steps = free["phases"][1]["train_steps"] - free["phases"][1]["balanced_finetune"]["steps"]
    capped = train(RunConfig(**options, max_steps=main_steps + 1, workspace=str(tmp_path / "c")))
    for phase in capped["phases"][1:]:
        assert phase["train_steps"] <= main_steps + 1
        assert phase["balanced_finetune"]["steps"] <= 1
    spent = train(RunConfig(**options, max_steps=main_steps, workspace=str(tmp_path / "s")))
    assert spent["phases"][1]["balanced_finetune"]["skipped"]
    assert spent["phases"][1]["balanced_finetune"]["steps"] == 0


def test_options_are_checked(six_class_manifest):
    options = small_run_options(six_class_manifest)
    with pytest.raises(EdgeclError, match="--balanced-epochs"):
        RunConfig(**options, balanced_epochs=-1)
    with pytest.raises(EdgeclError, match="--balanced-lr"):
        RunConfig(**options, balanced_lr=0.0)
    result = CliRunner().invoke(main, ["train", "--mode", "finetune", "--balanced-epochs", "2",
                                       "--no-export"])
    assert result.exit_code != 0
    assert "--balanced-epochs: only used with --mode replay" in result.output
