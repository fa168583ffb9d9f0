"""BiC-style bias correction of the new classes' logits (edgecl.training.bias_correction)."""

from __future__ import annotations

import pytest
import torch
from run_helpers import Interrupted, dies_before_committing, small_run_options
from test_resume import comparable

from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.report.aggregate import method_label
from edgecl.run_folder import checkpoint_path
from edgecl.run_state import load_state
from edgecl.trainer import ContinualRun, train
from edgecl.training.bias_correction import corrected, fit_bias_correction, fold_into_head
from edgecl.training.loop import task_accuracy
from models.head import ClassifierHead


def test_fold_into_head_computes_the_corrected_logits_and_keeps_old_rows():
    torch.manual_seed(0)
    head = ClassifierHead(5, 4)
    embedding = torch.randn(8, 5)
    before = head(embedding)
    old_weight, old_bias = head.fc.weight[:2].clone(), head.fc.bias[:2].clone()
    fold_into_head(head, 2, 0.5, -1.5)
    after = head(embedding)
    assert torch.allclose(after, corrected(before, 2, 0.5, -1.5), atol=1e-6)
    assert torch.equal(head.fc.weight[:2], old_weight) and torch.equal(head.fc.bias[:2], old_bias)


def test_fit_removes_a_bias_toward_the_new_classes():
    generator = torch.Generator().manual_seed(1)
    targets = torch.arange(6).repeat(40)  # 6 classes, 2 new (4, 5), balanced
    clean = torch.randn(240, 6, generator=generator)
    clean[torch.arange(240), targets] += 2.0
    biased = corrected(clean, 4, 1.0, 2.5)  # new classes' logits pushed up by 2.5
    alpha, beta = fit_bias_correction(biased, targets, 4)
    assert beta < -1.0 and alpha > 0
    accuracy = lambda z: float((z.argmax(dim=1) == targets).double().mean())  # noqa: E731
    assert accuracy(corrected(biased, 4, alpha, beta)) > accuracy(biased) + 0.15
    # On unbiased logits the fit may rescale confidence but barely moves decisions.
    alpha0, beta0 = fit_bias_correction(clean, targets, 4)
    assert accuracy(corrected(clean, 4, alpha0, beta0)) >= accuracy(clean) - 0.03


def test_run_records_and_reproduces_the_correction(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, mem_manage="reservoir",
                                bias_correction="in-loop")
    first = train(RunConfig(**options, workspace=str(tmp_path / "one")))
    second = train(RunConfig(**options, workspace=str(tmp_path / "two")))
    assert comparable(first) == comparable(second)
    assert "bias_correction" not in first["phases"][0]  # no old classes in phase 0
    for phase in first["phases"][1:]:
        entry = phase["bias_correction"]
        assert entry["alpha"] > 0 and entry["val_clips"] == phase["n_val"]
        assert entry["applied"] == "in-loop"
        assert entry["val_accuracy_after"] >= entry["val_accuracy_before"] - 0.2
    assert "bias_correction" not in RunConfig(**{**options, "bias_correction": "off"}).identity()
    assert method_label(first["config"]) == "reservoir-m7-bic"


def test_config_reads_the_older_flag_and_rejects_other_values():
    # results.json of runs from before `deployed` hold a bool
    assert RunConfig(bias_correction=True).bias_correction == "in-loop"
    assert RunConfig(bias_correction=False).bias_correction == "off"
    with pytest.raises(EdgeclError, match="--bias-correction: expected one of off, in-loop, "
                                          "deployed"):
        RunConfig(bias_correction="always")


def _head(state_dict) -> tuple[torch.Tensor, torch.Tensor]:
    return state_dict["head.fc.weight"], state_dict["head.fc.bias"]


def test_deployed_correction_changes_the_phase_model_only(six_class_manifest, tmp_path):
    # seed 3: phase 1's fit moves the head (on a few validation clips it may not: alpha 1, beta 0)
    options = small_run_options(six_class_manifest, mem_manage="reservoir",
                                bias_correction="deployed", seed=3)
    run = ContinualRun(RunConfig(**options, workspace=str(tmp_path / "deployed")))
    results = run.run()
    assert method_label(results["config"]) == "reservoir-m7-bicd"
    last, n_old = len(results["phases"]) - 1, 4  # three tasks of 2 classes
    entry = results["phases"][last]["bias_correction"]
    assert entry["applied"] == "deployed"
    deployed = torch.load(checkpoint_path(run.run_dir, last), weights_only=True)["state_dict"]
    learner = load_state(run.run_dir, last)["learner_head"]
    # The run goes on from the uncorrected head, which state.pt keeps; the checkpoint (what was
    # tested and would be exported) has the new rows mapped to alpha z + beta.
    for name, tensor in learner.items():
        assert torch.equal(run.model.head.state_dict()[name], tensor), name
    weight, bias = _head(deployed)
    assert torch.equal(weight[:n_old], learner["fc.weight"][:n_old])
    assert torch.equal(bias[:n_old], learner["fc.bias"][:n_old])
    assert torch.allclose(weight[n_old:], entry["alpha"] * learner["fc.weight"][n_old:])
    assert torch.allclose(bias[n_old:], entry["alpha"] * learner["fc.bias"][n_old:]
                          + entry["beta"], atol=1e-6)
    assert (entry["alpha"], entry["beta"]) != (1.0, 0.0)
    # Both models' test accuracy: the phase's (corrected) and the run's (uncorrected).
    per_task, overall = task_accuracy(run.model, run.items.clip_data, run.plan.tasks)
    assert (entry["uncorrected_task_accuracy"], entry["uncorrected_accuracy"]) == (per_task,
                                                                                  overall)
    uncorrected = results["uncorrected"]  # the run's own models' metrics beside the deployed ones
    assert uncorrected["A_last"] == overall and uncorrected["accuracy_matrix"][last] == per_task
    assert uncorrected["phase_accuracy"][0] == results["phase_accuracy"][0]  # nothing corrected

    # Phase 1 is the same model in both modes; phase 2 trains from another head.
    assert results["phases"][1]["bias_correction"]["alpha"] != 1.0
    in_loop = ContinualRun(RunConfig(**{**options, "bias_correction": "in-loop"},
                                     workspace=str(tmp_path / "in-loop")))
    in_loop_results = in_loop.run()
    assert "uncorrected" not in in_loop_results
    phase_1 = [{k: v for k, v in comparable(r)["phases"][1].items() if k != "bias_correction"}
               for r in (results, in_loop_results)]
    assert phase_1[0] == phase_1[1]
    in_loop_weights = torch.load(checkpoint_path(in_loop.run_dir, last),
                                 weights_only=True)["state_dict"]
    assert not torch.equal(in_loop_weights["head.fc.weight"], weight)


def test_run_with_a_deployed_correction_resumes_exactly(six_class_manifest, tmp_path,
                                                        monkeypatch):
    options = small_run_options(six_class_manifest, mem_manage="reservoir",
                                bias_correction="deployed", seed=3)  # phase 1 moves the head
    straight = ContinualRun(RunConfig(**options, workspace=str(tmp_path / "straight")))
    expected = straight.run()
    config = RunConfig(**options, workspace=str(tmp_path / "resumed"))
    with dies_before_committing(monkeypatch, 2), pytest.raises(Interrupted):
        ContinualRun(config).run()  # phase 1's state (with its corrected checkpoint) committed
    resumed = ContinualRun(config)
    assert comparable(resumed.run()) == comparable(expected)
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name




def test_a_deployed_correction_never_reaches_training(six_class_manifest, tmp_path):
    """The run's own models are those of the same run without the correction, bit for bit, and
    its `uncorrected` block holds that run's figures."""
    options = small_run_options(six_class_manifest, mem_manage="prototype", seed=3)
    plain = ContinualRun(RunConfig(**options, workspace=str(tmp_path / "off")))
    expected = plain.run()
    deployed = ContinualRun(RunConfig(**options, bias_correction="deployed",
                                      workspace=str(tmp_path / "deployed")))
    results = deployed.run()
    for name, tensor in plain.model.state_dict().items():
        assert torch.equal(tensor, deployed.model.state_dict()[name]), name
    for key in ("phase_accuracy", "accuracy_matrix", "A_avg", "A_last", "BWT"):
        assert results["uncorrected"][key] == expected[key], key
    # ... while the deployed (checkpointed) models differ where the fit moved the head
    moved = [i for i, p in enumerate(results["phases"])
             if p.get("bias_correction", {}).get("alpha", 1.0) != 1.0]
    assert moved
    for phase in moved:
        heads = [torch.load(checkpoint_path(run.run_dir, phase), weights_only=True)["state_dict"]
                 ["head.fc.weight"] for run in (plain, deployed)]
        assert not torch.equal(*heads), phase
