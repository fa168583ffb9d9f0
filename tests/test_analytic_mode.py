"""`edgecl train --mode analytic` (edgecl.steps.analytic): phase 0 trained by backpropagation, then
a frozen backbone and a recursive least-squares head equal to the batch ridge solution on every
seen clip, its state kept across a resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from run_helpers import Interrupted, dies_before_committing, small_run_options

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.run_folder import checkpoint_path
from edgecl.steps.analytic import AnalyticLearning
from edgecl.trainer import ContinualRun
from edgecl.training.analytic import clip_embeddings
from firmware_export.device.analytic import BOOST, AnalyticHead, ridge_solution


def _options(manifest, **overrides) -> dict:
    return small_run_options(manifest, mode="analytic", **overrides)


def _weights(tasks_targets: list[np.ndarray], weighting: str) -> np.ndarray:
    """Each clip's weight by the rule the module doc of firmware_export.device.analytic states:
    phase 0's classes the mean class's count over their own; a later class the mean clips of the
    classes before it over its own clips (1 everywhere with weighting off; that ratio to the
    power BOOST with boosted)."""
    first = tasks_targets[0]
    counts = {int(t): int((first == t).sum()) for t in np.unique(first)}
    weights = [np.array([np.mean(list(counts.values())) / counts[int(t)] for t in first])]
    for targets in tasks_targets[1:]:
        phase = np.ones(len(targets))
        for target in sorted(set(int(t) for t in targets)):
            rows = targets == target
            phase[rows] = np.mean(list(counts.values())) / rows.sum()
            counts[target] = int(rows.sum())
        weights.append(phase)
    merged = np.concatenate(weights)
    return {"balanced": merged, "boosted": merged ** BOOST, "off": np.ones_like(merged)}[weighting]


def _step(run: ContinualRun) -> AnalyticLearning:
    (step,) = [s for s in run.steps if isinstance(s, AnalyticLearning)]
    return step


@pytest.mark.parametrize("weighting", ["balanced", "boosted", "off"])
def test_the_head_is_the_ridge_solution_on_every_seen_clip_and_the_backbone_stays(
        six_class_manifest, tmp_path, weighting):
    # Few-shot later phases: their classes hold fewer clips, so the weighting matters.
    run = ContinualRun(RunConfig(**_options(six_class_manifest, analytic_weighting=weighting,
                                            shots=3), workspace=str(tmp_path)))
    results = run.run()
    matrix = results["accuracy_matrix"]
    assert len(matrix) == 3 and all(len(row) == i + 1 for i, row in enumerate(matrix))
    # Phases >= 1 leave the backbone (weights and BatchNorm statistics) as phase 0 trained it.
    states = [torch.load(checkpoint_path(run.run_dir, p), weights_only=True)["state_dict"]
              for p in range(3)]
    backbone = [k for k in states[0] if k.startswith("backbone.")]
    assert backbone and all(torch.equal(states[0][k], states[p][k])
                            for p in (1, 2) for k in backbone)
    assert [results["phases"][p]["epochs_run"] for p in (1, 2)] == [0, 0]
    assert results["phases"][0]["epochs_run"] > 0
    # The recursive head equals the closed form on all seen clips, with the same gamma/weights.
    head = _step(run).head
    per_task = [run.items.clip_data(task.train) for task in run.plan.tasks]
    embeddings = [clip_embeddings(run.model, data, 8) for data in per_task]
    targets = [data.targets.numpy() for data in per_task]
    reference = AnalyticHead.standardised_on(embeddings[0], gamma=head.gamma)
    columns = {int(label): j for j, label in enumerate(head.labels)}
    expected = ridge_solution(reference.features(np.concatenate(embeddings)),
                              np.array([columns[int(t)] for t in np.concatenate(targets)]),
                              _weights(targets, weighting), head.gamma, len(columns))
    np.testing.assert_allclose(head.w, expected, rtol=1e-6, atol=1e-6)
    # The run's Linear head is that head folded, row by target.
    a, b = head.folded()
    order = [int(label) for label in head.labels]
    assert sorted(order) == list(range(6))
    np.testing.assert_allclose(run.model.head.fc.weight.detach().numpy()[order], a.T,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run.model.head.fc.bias.detach().numpy()[order], b,
                               rtol=1e-5, atol=1e-5)
    # Costs: the update's MACs and the state's bytes per phase.
    d = run.model.embedding_dim + 1
    for phase, seen in zip(results["phases"], (2, 4, 6), strict=True):
        entry = phase["analytic"]
        assert entry["gamma"] == head.gamma and entry["weighting"] == weighting
        assert entry["update_macs"] == entry["clips"] * (2 * d * d + d * seen) > 0
        assert entry["state_bytes"] == 4 * (d * (d + 1) // 2 + d * seen + 2 * (d - 1))


def test_a_given_gamma_is_used_and_a_resumed_run_matches_an_uninterrupted_one(
        six_class_manifest, tmp_path, monkeypatch):
    options = _options(six_class_manifest, analytic_gamma=0.5)
    straight = ContinualRun(RunConfig(**options, workspace=str(tmp_path / "straight")))
    expected = straight.run()
    assert {p["analytic"]["gamma"] for p in expected["phases"]} == {0.5}
    config = RunConfig(**options, workspace=str(tmp_path / "resumed"))
    with dies_before_committing(monkeypatch, 2), pytest.raises(Interrupted):
        ContinualRun(config).run()
    resumed_run = ContinualRun(config)
    resumed = resumed_run.run()
    assert resumed["accuracy_matrix"] == expected["accuracy_matrix"]
    np.testing.assert_array_equal(_step(resumed_run).head.w, _step(straight).head.w)
    last = [torch.load(checkpoint_path(run.run_dir, 2), weights_only=True)["state_dict"]
            for run in (straight, resumed_run)]
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])


def test_the_options_belong_to_the_mode_and_memory_options_are_refused(six_class_manifest):
    assert RunConfig(mode="analytic").name != RunConfig(mode="finetune").name
    assert RunConfig(mode="analytic", analytic_weighting="balanced").name == \
        RunConfig(mode="analytic").name
    with pytest.raises(EdgeclError, match="--analytic-gamma: only used with --mode analytic"):
        RunConfig(analytic_gamma=1.0)
    with pytest.raises(EdgeclError, match="--analytic-weighting"):
        RunConfig(mode="finetune", analytic_weighting="off")
    with pytest.raises(EdgeclError, match="--distill-output.*--mode analytic"):
        RunConfig(mode="analytic", distill_output=1.0)
    with pytest.raises(EdgeclError, match="--analytic-gamma"):
        RunConfig(mode="analytic", analytic_gamma=0.0)
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--mode", "analytic", "--memory-size", "100",
                                  "--dataset", "manifest", "--data-root", str(six_class_manifest)])
    assert result.exit_code != 0 and "--memory-size: only used with --mode replay" in result.output
    result = runner.invoke(main, ["train", "--mode", "analytic", "--analytic-weighting", "some"])
    assert result.exit_code != 0 and "--analytic-weighting" in result.output
