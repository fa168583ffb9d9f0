"""Distillation from the previous phase's model: the losses, the teacher's cost in the phase's
budget figures, reproducibility and resume; and model selection (ties on validation accuracy broken
by validation loss, --val-fraction)."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
import torch
from click.testing import CliRunner
from run_helpers import Interrupted, dies_before_committing, small_run_options
from test_resume import comparable
from torch import nn

from edgecl.budget.macs import ModelMacs
from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.run_folder import checkpoint_path, load_checkpoint
from edgecl.trainer import ContinualRun, train
from edgecl.training import PhaseData, fit
from edgecl.training.distill import (
    Distiller,
    DistillSettings,
    feature_distillation,
    output_distillation,
)
from edgecl.training.loop import evaluate_with_loss

DISTILL = {"distill_output": 1.0, "distill_feature": 1.0, "distill_adaptive": True}


# --- the losses ---------------------------------------------------------------------------

def test_output_distillation_is_zero_on_agreement_and_grows_with_disagreement():
    torch.manual_seed(0)
    teacher = torch.randn(16, 4)
    direction = torch.randn(16, 4)
    assert float(output_distillation(teacher.clone(), teacher, 2.0)) == pytest.approx(0, abs=1e-6)
    # Adding the same constant to every logit of a clip changes no probability.
    assert float(output_distillation(teacher + 3.0, teacher, 2.0)) == pytest.approx(0, abs=1e-6)
    losses = [float(output_distillation(teacher + s * direction, teacher, 2.0))
              for s in (0.25, 0.5, 1.0, 2.0)]
    assert all(b > a > 0 for a, b in pairwise(losses)), losses


def test_feature_distillation_is_zero_on_agreement_and_grows_with_the_angle():
    torch.manual_seed(0)
    teacher = torch.randn(16, 8)
    assert float(feature_distillation(teacher.clone(), teacher)) == pytest.approx(0, abs=1e-6)
    assert float(feature_distillation(3 * teacher, teacher)) == pytest.approx(0, abs=1e-6)
    assert float(feature_distillation(-teacher, teacher)) == pytest.approx(2.0, abs=1e-6)
    direction = torch.randn(16, 8)
    losses = [float(feature_distillation(teacher + s * direction, teacher))
              for s in (0.1, 0.5, 1.0, 4.0)]
    assert all(b > a > 0 for a, b in pairwise(losses)), losses


def _model(n_classes=3):
    from models import build_model
    from models.frontend import FrontEndConfig

    torch.manual_seed(1)
    return build_model("bc-resnet", n_classes, FrontEndConfig.for_sample_rate(8000), width=8)


def test_distiller_loss_is_zero_for_the_teachers_own_outputs_and_weights_old_classes_only():
    model = _model(3)
    distiller = Distiller(model, DistillSettings(output=1.0, feature=1.0, adaptive=True), 5)
    assert (distiller.n_old, distiller.scale) == (3, pytest.approx(3 / 5))
    assert distiller.output_weight == distiller.feature_weight == pytest.approx(0.6)
    logmel = model.frontend(torch.randn(4, 2000))
    with torch.no_grad():
        logits, embedding = distiller.teacher.forward_features(logmel)
    # The student's two new classes' logits do not enter the output distillation.
    grown = torch.cat([logits, torch.randn(4, 2) * 10], dim=1)
    assert float(distiller.loss(logmel, grown, embedding)) == pytest.approx(0, abs=1e-5)
    assert float(distiller.loss(logmel, grown + torch.randn(4, 5), embedding + 1)) > 0
    # The teacher is a frozen copy: training the model leaves it as it was.
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert float(distiller.loss(logmel, grown, embedding)) == pytest.approx(0, abs=1e-5)


# --- runs ---------------------------------------------------------------------------------

def test_teacher_forward_macs_are_added_to_train_macs_exactly(six_class_manifest, tmp_path):
    # patience 0: every epoch runs, so both runs take the same steps on the same clips.
    options = small_run_options(six_class_manifest, patience=0, mem_manage="reservoir")
    plain = train(RunConfig(**options, workspace=str(tmp_path / "plain")))
    run = ContinualRun(RunConfig(**options, **DISTILL, workspace=str(tmp_path / "distilled")))
    distilled = run.run()
    assert plain["phases"][0]["train_macs"] == distilled["phases"][0]["train_macs"]
    assert distilled["phases"][0]["distill"]["teacher"] is False
    for phase in (1, 2):
        before, after = plain["phases"][phase], distilled["phases"][phase]
        assert before["steps"] == after["steps"]
        clips = before["n_train"] * before["epochs_run"]
        # The teacher: the model the previous phase ended with (its checkpoint).
        teacher = load_checkpoint(checkpoint_path(run.run_dir, phase - 1))[0]
        teacher_macs = ModelMacs.of_model(teacher, run.split.clip_samples)
        expected = clips * (teacher_macs.backbone + teacher_macs.head)
        assert after["train_macs"] - before["train_macs"] == expected
        record = after["distill"]
        assert record["teacher_train_macs"] == expected
        assert record["teacher_macs_share"] == pytest.approx(expected / after["train_macs"])
        # The teacher's RAM: its weights and inference activations, inside the phase's total.
        ram = after["device_train_ram"]
        weights = 4 * (sum(p.numel() for p in teacher.parameters())
                       + sum(b.numel() for b in teacher.buffers()))
        assert record["teacher_ram_weights_bytes"] == weights
        assert ram["teacher"] == record["teacher_ram_bytes"] > weights
        assert after["device_train_ram_bytes"] == ram["total"] == before[
            "device_train_ram_bytes"] + ram["teacher"]


def test_mac_budget_holds_with_the_teacher_and_refuses_too_small_a_budget(six_class_manifest,
                                                                          tmp_path):
    options = small_run_options(six_class_manifest, patience=0, mem_manage="reservoir", **DISTILL)
    free = train(RunConfig(**options, workspace=str(tmp_path / "free")))
    limit = free["phases"][2]["train_macs"] // 2
    capped = train(RunConfig(**options, max_train_macs=limit, workspace=str(tmp_path / "cap")))
    for phase in capped["phases"]:
        assert phase["train_macs"] <= limit
    assert capped["phases"][2]["stopped_for_budget"]
    # A budget that covers one phase-0 step but not a distilled step is refused before training.
    first_step = free["phases"][0]["train_macs"] // free["phases"][0]["steps"]
    with pytest.raises(EdgeclError, match="with the distillation teacher's forward"):
        ContinualRun(RunConfig(**options, max_train_macs=first_step + 1,
                               workspace=str(tmp_path / "tiny")))


def test_a_distilled_run_reproduces_and_records_its_settings(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, mem_manage="uncertainty",
                                uncert_metric="noisytune", metric_k=2, distill_temperature=3.0,
                                **DISTILL)
    first = train(RunConfig(**options, workspace=str(tmp_path / "one")))
    second = train(RunConfig(**options, workspace=str(tmp_path / "two")))
    assert comparable(first) == comparable(second)
    records = [phase["distill"] for phase in first["phases"]]
    assert records[0]["teacher"] is False
    assert [r["n_old"] for r in records[1:]] == [2, 4]
    assert [r["scale"] for r in records[1:]] == [pytest.approx(2 / 4), pytest.approx(4 / 6)]
    assert all(r["temperature"] == 3.0 and 0 < r["teacher_macs_share"] < 1 for r in records[1:])
    assert (tmp_path / "one" / "run" / "config.toml").read_text().count("distill-output = 1.0") == 1


def test_joint_mode_has_no_teacher(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, mode="joint", **DISTILL)
    options.pop("memory_size")
    results = train(RunConfig(**options, workspace=str(tmp_path)))
    assert [p["distill"]["teacher"] for p in results["phases"]] == [False]


def test_interrupted_distilled_run_resumes_with_identical_results(six_class_manifest, tmp_path,
                                                                  monkeypatch):
    # The teacher of phase 2 is the model after phase 1, restored from its checkpoint on resume.
    options = small_run_options(six_class_manifest, mem_manage="reservoir", **DISTILL)
    expected = train(RunConfig(**options, workspace=str(tmp_path / "straight")))
    config = RunConfig(**options, workspace=str(tmp_path / "resumed"))
    with dies_before_committing(monkeypatch, 2), pytest.raises(Interrupted):
        ContinualRun(config).run()
    results = ContinualRun(config).run()
    assert comparable(results) == comparable(expected)
    log = (tmp_path / "resumed" / "run" / "train.log").read_text()
    assert "resuming at phase 2" in log


# --- model selection ----------------------------------------------------------------------

class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward_features(self, x):
        embedding = x.flatten(1)
        return self.fc(embedding), embedding


def _separable(n, generator):
    targets = torch.arange(n) % 2
    points = torch.randn(n, 2, generator=generator) * 0.3 + (targets[:, None] * 2 - 1) * 3.0
    return PhaseData(features=lambda idx: points[idx], targets=targets)


def test_a_tie_on_validation_accuracy_is_broken_by_the_lower_validation_loss():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = _Linear()
    train_data, val = _separable(64, generator), _separable(16, generator)
    report = fit(model, train_data, val, epochs=6, batch_size=16, lr=0.05, patience=0,
                 generator=generator)
    # Far-apart clusters: validation accuracy soon reaches 100% and stays, the loss keeps falling.
    tied = [e for e, accuracy in enumerate(report.val_accuracy) if accuracy == 1.0]
    assert len(tied) >= 3 and tied[-1] == 5
    losses = [report.val_loss[e] for e in tied]
    assert report.best_epoch == tied[losses.index(min(losses))] != tied[0]
    assert report.selected_by == "val_loss" and report.best_val_loss == min(losses)
    assert evaluate_with_loss(model, val)[1] == pytest.approx(min(losses))  # weights restored
    assert "(tie on accuracy broken by loss)" in report.selection()
    assert f"best epoch {report.best_epoch}: val acc 100.0%" in report.selection()


def test_val_fraction_sets_the_validation_split(six_class_manifest, tmp_path):
    from edgecl.run_folder import load_plan

    sizes = []
    for fraction in (0.0, 0.5):
        config = RunConfig(**small_run_options(six_class_manifest, val_fraction=fraction),
                           workspace=str(tmp_path))
        sizes.append(sum(len(task.val) for task in load_plan(config)[2].tasks))
    assert sizes == [0, 18]  # six classes of six training clips: none, then three each


@pytest.mark.parametrize("extra, message", [
    (["--val-fraction", "0.95"], ("--val-fraction: expected a fraction of each task's training "
                                  "clips in [0, 0.9], got 0.95")),
    (["--val-fraction", "-0.1"], "--val-fraction: expected"),
    (["--distill-output", "-1"], "--distill-output: expected a weight (0 = off) in [0, 1000]"),
    (["--distill-feature", "nan"], "--distill-feature: expected"),
    (["--distill-temperature", "0"], "--distill-temperature: expected a temperature"),
])
def test_out_of_range_options_are_one_line_errors(tiny_manifest, tmp_path, extra, message):
    result = CliRunner().invoke(main, [
        "train", "--dataset", "manifest", "--data-root", str(tiny_manifest), "--workspace",
        str(tmp_path), "--width", "8", "--epochs", "1", "--threads", "1", "--no-export",
        "--quiet", *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output and not list(tmp_path.rglob("results.json"))


def test_results_record_the_selection_basis(six_class_manifest, tmp_path):
    results = train(RunConfig(**small_run_options(six_class_manifest, val_fraction=0.0),
                              workspace=str(tmp_path)))
    assert {p["selected_by"] for p in results["phases"]} == {"last_epoch"}
    log = (tmp_path / "run" / "train.log").read_text()
    assert "no validation clips" in log
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert data["config"]["val_fraction"] == 0.0


def test_grid_specs_and_the_report_know_the_distillation_options(tmp_path):
    from edgecl.grid.spec import parse_spec
    from edgecl.report.aggregate import method_label

    spec = parse_spec({"common": {"epochs": 2, "val_fraction": 0.2},
                       "methods": [{"name": "kd", "mode": "replay", "distill_output": [0, 1],
                                    "distill_feature": 1, "distill_adaptive": True}]}, "a", "a")
    trials = spec.trials()
    assert {t.method for t in trials} == {"kd-kdo0", "kd-kdo1"}
    args = trials[0].train_args(tmp_path)
    assert "--distill-adaptive" in args and "--val-fraction" in args
    config = {"mode": "replay", "mem_manage": "random", "memory_size": 50}
    assert method_label(config) == "random-m50"
    assert method_label({**config, "distill_output": 1.0, "distill_feature": 0.5,
                         "distill_adaptive": True}) == "random-m50-kd1-0.5a"
    assert method_label({"mode": "finetune", "distill_feature": 2.0}) == "finetune-kd0-2"
