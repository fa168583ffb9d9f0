"""`edgecl diagnose` (edgecl.report.forgetting): where a run's accuracy goes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from run_helpers import small_run_options

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.report.forgetting import (
    batchnorm_input_means,
    diagnose,
    drift_share,
    errors_toward_newest,
    head_rows_by_task,
    percentile_ranks,
)
from edgecl.trainer import train


def test_errors_toward_newest_counts_only_wrong_old_clips():
    targets = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([2, 0, 2, 0, 1, 2])  # old errors: 0->2, 1->2, 1->0; new error ignored
    assert errors_toward_newest(predictions, targets, [0, 1], [2]) == pytest.approx(2 / 3)
    assert errors_toward_newest(targets, targets, [0, 1], [2]) is None


def test_drift_share_places_the_running_mean_between_the_groups():
    old, new = torch.zeros(3), torch.ones(3)
    assert drift_share(old, old, new) == 0.0
    assert drift_share(new, old, new) == 1.0
    assert drift_share(torch.full((3,), 0.5), old, new) == pytest.approx(0.5)
    assert drift_share(torch.full((3,), 0.9), old, new) == pytest.approx(0.9)


def test_percentile_ranks():
    np.testing.assert_allclose(percentile_ranks(np.array([0.3, 0.1, 0.2])), [1.0, 0.0, 0.5])


def test_batchnorm_input_means_and_head_rows():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(2)
            self.head = torch.nn.Module()
            self.head.fc = torch.nn.Linear(2, 3)

        def forward_features(self, x):
            return self.head.fc(self.norm(x)), x

    net = Net()
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    (mean,) = batchnorm_input_means(net, x, batch_size=2)
    assert torch.allclose(mean, x.mean(dim=0))
    with torch.no_grad():
        net.head.fc.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]]))
        net.head.fc.bias.copy_(torch.tensor([1.0, -1.0, 0.0]))
    rows = head_rows_by_task(net.head, [[0], [1, 2]])
    assert rows == [{"weight_norm": 5.0, "bias": 1.0}, {"weight_norm": 1.5, "bias": -0.5}]


def test_diagnose_a_run_matches_its_results_and_reports_every_part(six_class_manifest, tmp_path):
    options = small_run_options(six_class_manifest, mem_manage="reservoir")
    results = train(RunConfig(**options, workspace=str(tmp_path)))
    run = tmp_path / "run"
    d = diagnose(run)
    assert d["phase"] == 2
    assert d["task_accuracy"] == pytest.approx(results["accuracy_matrix"][-1])
    assert len(d["head"]) == 3
    assert 0 <= d["batchnorm"]["mean_share_new"] <= 1
    assert set(d["counterfactual"]) == {"weight_aligned", "balanced_bn", "both", "bias_corrected"}
    assert d["counterfactual"]["bias_corrected"]["alpha"] > 0
    assert d["memory"]["old"]["exemplars"] + d["memory"]["newest"]["exemplars"] == 7
    assert 0 <= d["memory"]["old"]["mean_percentile"] <= 1
    assert 0 <= d["newest_uncertainty"]["zero_share"] <= 1
    assert diagnose(run, 1)["task_accuracy"] == pytest.approx(results["accuracy_matrix"][1][:2])
    with pytest.raises(EdgeclError, match="--phase"):
        diagnose(run, 3)
    out = CliRunner().invoke(main, ["diagnose", str(run), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["phase"] == 2
    text = CliRunner().invoke(main, ["diagnose", str(run)]).output
    assert "BatchNorm running means toward the newest classes" in text
