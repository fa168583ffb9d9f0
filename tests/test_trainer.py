"""The continual learner end to end on a tiny manifest dataset, plus the training loop's rules."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgecl.config import RunConfig
from edgecl.trainer import ContinualRun, train
from edgecl.training import PhaseData, StopCondition, evaluate, fit


def _config(manifest, workspace, **overrides):
    base = dict(dataset="manifest", data_root=str(manifest), workspace=str(workspace), width=8,
                epochs=2, batch_size=8, patience=2, n_tasks=3, n_init_cls=2, n_cls_a_task=2,
                memory_size=7, metric_k=2, export=False, quiet=True, threads=1, seed=5)
    base.update(overrides)
    return RunConfig(**base)


# The default suite runs two of them (an embedding sampler and the uncertainty sampler); the
# rest are slow (each is a whole three-phase run).
SAMPLER_RUNS = [pytest.param("random", "noisytune", marks=pytest.mark.slow),
                pytest.param("reservoir", "noisytune", marks=pytest.mark.slow),
                ("prototype", "noisytune"),
                pytest.param("uncertainty", "shift", marks=pytest.mark.slow),
                pytest.param("uncertainty", "noise", marks=pytest.mark.slow),
                ("uncertainty", "noisytune")]


@pytest.mark.parametrize("mem_manage, metric", SAMPLER_RUNS)
def test_replay_runs_three_phases_with_every_sampler(six_class_manifest, tmp_path, mem_manage,
                                                     metric):
    config = _config(six_class_manifest, tmp_path, mem_manage=mem_manage, uncert_metric=metric)
    results = train(config)
    run_dir = tmp_path / config.name
    assert json.loads((run_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    assert results["complete"] and results["config"]["mem_manage"] == mem_manage
    assert len(results["phase_accuracy"]) == 3
    assert [len(row) for row in results["accuracy_matrix"]] == [1, 2, 3]
    assert len(results["classes"]) == 6 and results["tasks"][0] == results["classes"][:2]
    for balance in results["memory_balance"]:
        assert 0 < sum(balance.values()) <= 7
    # after phase 0 only the first two classes can be in memory
    assert set(results["memory_balance"][0]) <= set(results["classes"][:2])
    assert all(s is not None and s >= 0 for s in results["memory_update_seconds"])
    assert results["A_last"] == results["phase_accuracy"][-1]
    assert (run_dir / "train.log").read_text().count("memory update by") == 3


def test_checkpoint_is_weights_only_and_rebuilds_the_model(six_class_manifest, tmp_path):
    from models import rebuild

    config = _config(six_class_manifest, tmp_path, mode="finetune", n_tasks=2)
    run = ContinualRun(config)
    results = run.run()
    assert results["memory_update_seconds"] == [None, None]
    assert results["memory_balance"] == [None, None]
    checkpoint = torch.load(tmp_path / config.name / "phase_1" / "checkpoint.pt",
                            weights_only=True)
    assert checkpoint["classes"] == results["classes"][:4]
    model = rebuild(checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval(), run.model.eval()
    waves = torch.randn(3, run.split.clip_samples)
    with torch.no_grad():
        assert torch.allclose(model(waves)[0], run.model(waves)[0])
    phase0 = torch.load(tmp_path / config.name / "phase_0" / "checkpoint.pt", weights_only=True)
    assert phase0["model_config"]["n_classes"] == 2


def test_joint_trains_every_class_in_one_phase(six_class_manifest, tmp_path):
    results = train(_config(six_class_manifest, tmp_path, mode="joint"))
    assert len(results["phase_accuracy"]) == 1
    assert len(results["accuracy_matrix"][0]) == 3  # accuracy on each task's classes
    assert results["BWT"] is None and results["memory_update_seconds"] == [None]


@pytest.mark.slow  # four whole runs
def test_same_seed_same_numbers_and_cache_changes_nothing(six_class_manifest, tmp_path):
    keys = ("phase_accuracy", "accuracy_matrix", "memory_balance", "classes")
    first = train(_config(six_class_manifest, tmp_path / "one", mem_manage="prototype"))
    second = train(_config(six_class_manifest, tmp_path / "two", mem_manage="prototype"))
    uncached = train(_config(six_class_manifest, tmp_path / "three", mem_manage="prototype",
                             feature_cache=False))
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
    assert {k: first[k] for k in keys} == {k: uncached[k] for k in keys}
    assert [p["steps"] for p in first["phases"]] == [p["steps"] for p in uncached["phases"]]
    other = train(_config(six_class_manifest, tmp_path / "four", mem_manage="prototype", seed=6))
    assert other["classes"] != first["classes"] or other["phase_accuracy"] != first["phase_accuracy"]


def test_features_are_computed_once_per_clip_with_the_cache(six_class_manifest, tmp_path):
    run = ContinualRun(_config(six_class_manifest, tmp_path, mem_manage="random", epochs=3,
                               patience=0))
    run.run()
    # train + val + test clips of six classes, plus one entry per exemplar ever stored
    n_clips = 6 * 8
    assert run.features.computed <= n_clips + 3 * 7
    assert run.features.computed >= n_clips


# --- the training loop ------------------------------------------------------------------------

class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 2)

    def forward_features(self, x):
        embedding = x.flatten(1)
        return self.head(embedding), embedding


def _data(n, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 1, 4, generator=generator)
    y = (x[:, 0, 0, 0] > 0).long()
    return PhaseData(lambda idx: x[list(idx)], y)


class StepLimit(StopCondition):
    def __init__(self, limit):
        self.limit, self.steps = limit, 0

    def should_stop(self, batch_size):
        if self.steps >= self.limit:
            self.reason = "max steps"
            return True
        return False

    def step_done(self, batch_size):
        self.steps += 1


def test_stop_condition_ends_training_mid_epoch():
    torch.manual_seed(0)
    report = fit(TinyNet(), _data(64, 0), _data(16, 1), epochs=10, batch_size=8, lr=1e-2,
                 patience=0, generator=torch.Generator().manual_seed(0), stop=StepLimit(11))
    assert report.steps == 11 and report.stopped_by == "max steps"
    assert report.epochs_run == 2  # 8 steps in epoch 0, 3 in epoch 1


def test_early_stopping_restores_the_best_epoch():
    """Validation labels are the opposite of the training rule, so validation accuracy falls as
    the model learns: training stops `patience` epochs after the best one and its weights return."""
    torch.manual_seed(0)
    model = TinyNet()
    train_data, val = _data(64, 0), _data(32, 1)
    inverted = PhaseData(val.features, 1 - val.targets)
    history = []
    report = fit(model, train_data, inverted, epochs=30, batch_size=8, lr=0.05, patience=3,
                 generator=torch.Generator().manual_seed(0),
                 progress=lambda epoch, loss, accuracy, steps: history.append(accuracy))
    assert report.stopped_by == "patience"
    assert report.epochs_run == report.best_epoch + 1 + 3 == len(history)
    assert history[-1] < max(history) == report.best_val_accuracy
    assert evaluate(model, inverted) == pytest.approx(report.best_val_accuracy)


def test_trailing_batch_of_one_is_folded_in():
    report = fit(TinyNet(), _data(17, 0), _data(4, 1), epochs=1, batch_size=8, lr=1e-3,
                 patience=0, generator=torch.Generator().manual_seed(0))
    assert report.steps == 2  # 8 + 9, never a batch of one
    report = fit(TinyNet(), _data(9, 0), _data(4, 1), epochs=1, batch_size=8, lr=1e-3,
                 patience=0, generator=torch.Generator().manual_seed(0))
    assert report.steps == 1  # 8 + 1 folded into one batch of 9 (two chunks: was an IndexError)
