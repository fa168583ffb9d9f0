"""Elastic weight consolidation as a step (edgecl.steps.ewc): its penalty, its costs, its option
and its state across a resume."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from run_helpers import Interrupted, dies_before_committing, small_run_options

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.run_folder import checkpoint_path
from edgecl.steps import build_steps, step_names
from edgecl.steps.ewc import ElasticWeightConsolidation
from edgecl.trainer import ContinualRun, train
from edgecl.training import PhaseData


class _Net(torch.nn.Module):
    def __init__(self, classes: int = 2):
        super().__init__()
        self.body = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, classes)

    def forward_features(self, x):
        embedding = self.body(x)
        return self.head(embedding), embedding


def _data(n: int = 16) -> PhaseData:
    features = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    return PhaseData(lambda i: features[i], torch.arange(n) % 2)


def _penalty(step) -> float:
    with torch.no_grad():
        return float(step.penalty())


def test_the_penalty_is_zero_at_the_anchor_and_grows_with_important_moves_only():
    net, step = _Net(), ElasticWeightConsolidation(weight=2.0)
    step.model = net
    step.fisher = ElasticWeightConsolidation._fisher(net, _data(), batch_size=5)
    assert set(step.fisher) == {"body.weight", "body.bias", "head.weight", "head.bias"}
    assert all(bool((f >= 0).all()) and float(f.sum()) > 0 for f in step.fisher.values())
    step.anchor = {name: p.detach().clone() for name, p in net.named_parameters()}
    assert _penalty(step) == 0.0
    with torch.no_grad():
        net.head.bias.add_(1.0)
    expected = 2.0 / 2 * float(step.fisher["head.bias"].sum())
    assert _penalty(step) == pytest.approx(expected)
    # A grown head: the new row is free, the old rows stay anchored.
    grown = torch.nn.Linear(4, 3)
    with torch.no_grad():
        grown.weight[:2] = net.head.weight
        grown.bias[:2] = net.head.bias
        grown.weight[2] = 100.0
    net.head = grown
    assert _penalty(step) == pytest.approx(expected)


def test_ewc_is_off_by_default_selectable_by_its_option_and_checked():
    assert "ewc" in step_names()
    assert RunConfig(ewc_lambda=0.0).name == RunConfig().name
    assert not any(isinstance(s, ElasticWeightConsolidation) for s in build_steps(RunConfig()))
    assert any(isinstance(s, ElasticWeightConsolidation)
               for s in build_steps(RunConfig(ewc_lambda=10.0)))
    assert "--ewc-lambda" in CliRunner().invoke(main, ["train", "--help"]).output
    result = CliRunner().invoke(main, ["train", "--ewc-lambda", "-1"])
    assert result.exit_code != 0 and "--ewc-lambda" in result.output


def test_the_penalty_costs_are_charged_and_important_weights_move_less(six_class_manifest,
                                                                       tmp_path, monkeypatch):
    # reservoir and patience 0: both runs train the same clips for the same steps.
    options = small_run_options(six_class_manifest, mem_manage="reservoir", patience=0, epochs=6)
    anchored = []  # the importance EWC anchored each phase's end with (its merged Fisher)
    after_fit = ElasticWeightConsolidation.after_fit

    def kept_after_fit(self, run, phase):
        after_fit(self, run, phase)
        anchored.append({name: value.clone() for name, value in self.fisher.items()})
    monkeypatch.setattr(ElasticWeightConsolidation, "after_fit", kept_after_fit)
    plain = ContinualRun(RunConfig(**options, workspace=str(tmp_path / "plain")))
    before = plain.run()
    held = ContinualRun(RunConfig(**options, ewc_lambda=1e6, workspace=str(tmp_path / "ewc")))
    after = held.run()
    assert after["phases"][0]["train_macs"] == before["phases"][0]["train_macs"]
    for phase in (1, 2):
        entry, clips = after["phases"][phase]["ewc"], (before["phases"][phase]["n_train"]
                                                       * before["phases"][phase]["epochs_run"])
        assert entry["anchored_parameters"] > 0 and entry["fisher_macs"] > 0
        assert (after["phases"][phase]["train_macs"] - before["phases"][phase]["train_macs"]
                == clips * entry["penalty_macs_per_clip"])
        assert (after["phases"][phase]["device_train_ram"]["optimizer_state"]
                == before["phases"][phase]["device_train_ram"]["optimizer_state"]
                + entry["ram_bytes"])

    # The importance the last phase was held to: the Fisher anchored at phase 1's end.
    fisher = {name: value for name, value in anchored[1].items() if name.startswith("backbone.")}

    def drift(run) -> float:  # how far the important backbone weights moved in the last phase
        first = torch.load(checkpoint_path(run.run_dir, 1), weights_only=True)["state_dict"]
        last = torch.load(checkpoint_path(run.run_dir, 2), weights_only=True)["state_dict"]
        return sum(float((importance * (last[name] - first[name]).pow(2)).sum())
                   for name, importance in fisher.items())

    # measured 0.04 on an AMD EPYC without AVX-512; the unweighted |change| of every backbone
    # weight gave 0.07 on one CPU and 0.26 on that one (the unimportant weights move freely)
    assert len(anchored) == 3 and drift(held) < 0.25 * drift(plain)


def test_a_run_with_ewc_resumes_exactly(six_class_manifest, tmp_path, monkeypatch):
    options = small_run_options(six_class_manifest, mem_manage="reservoir", ewc_lambda=100.0)
    expected = train(RunConfig(**options, workspace=str(tmp_path / "straight")))
    config = RunConfig(**options, workspace=str(tmp_path / "resumed"))
    with dies_before_committing(monkeypatch, 2), pytest.raises(Interrupted):
        ContinualRun(config).run()
    resumed = ContinualRun(config).run()
    assert resumed["accuracy_matrix"] == expected["accuracy_matrix"]
    assert ([p["best_val_loss"] for p in resumed["phases"]]
            == [p["best_val_loss"] for p in expected["phases"]])
