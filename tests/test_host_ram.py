"""Activation checkpointing (models.checkpointing) and the host training-memory estimate
(edgecl.budget.host_ram)."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgecl import allocator
from edgecl.budget.host_ram import (
    activation_profile,
    estimate_host_train_ram,
    kept_bytes,
    largest_batch,
)
from edgecl.errors import EdgeclError
from models import build_model
from models.bcresnet import BroadcastedBlock, TransitionBlock
from models.frontend import FrontEndConfig

ROOT = Path(__file__).resolve().parents[1]


def small_model(model: str = "bc-resnet"):
    torch.manual_seed(0)
    return build_model(model, 4, FrontEndConfig.for_sample_rate(16000, n_mels=32), width=8)


def train_step(model, batch, targets, seed: int):
    """One Adam step from a fixed RNG state; returns the draw the RNG gives next."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    logits, _ = model.forward_features(batch)
    torch.nn.functional.cross_entropy(logits, targets).backward()
    optimizer.step()
    return torch.rand(3)


def test_checkpointed_step_equals_plain_step():
    plain = small_model().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.backbone.checkpoint_blocks = True
    batch, targets = torch.randn(4, 1, 32, 40), torch.tensor([0, 1, 2, 3])
    next_plain = train_step(plain, batch, targets, seed=5)
    next_checkpointed = train_step(checkpointed, batch, targets, seed=5)
    # Same weights after the step (so the same gradients and dropout masks), same BatchNorm
    # statistics, and the RNG stream goes on as if nothing had been recomputed.
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(next_plain, next_checkpointed)


def test_batchnorm_statistics_update_once_per_step():
    model = small_model().train()
    model.backbone.checkpoint_blocks = True
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    train_step(model, torch.randn(4, 1, 32, 40), torch.tensor([0, 1, 2, 3]), seed=1)
    assert norms and all(int(norm.num_batches_tracked) == 1 for norm in norms)


def test_checkpointing_runs_only_when_training_with_gradients(monkeypatch):
    import models.checkpointing as checkpointing

    calls = []
    original = checkpointing.checkpointed
    monkeypatch.setattr(checkpointing, "checkpointed",
                        lambda block, x: calls.append(block) or original(block, x))
    model = small_model()
    model.backbone.checkpoint_blocks = True
    batch = torch.randn(2, 1, 32, 40)
    model.eval()
    model.forward_features(batch)
    model.train()
    with torch.no_grad():
        model.forward_features(batch)
    assert calls == []
    model.forward_features(batch)
    blocks = [m for m in model.backbone.layers if isinstance(m, (TransitionBlock,
                                                                 BroadcastedBlock))]
    assert calls == blocks


def test_profile_counts_every_layer_and_checkpointing_keeps_less():
    model = small_model()
    profile = activation_profile(model, (1, 32, 40))
    assert len(profile) == len(model.backbone.layers) + 1
    assert sum(layer.checkpointable for layer in profile) == 9  # 4 transition, 5 broadcasted
    assert kept_bytes(profile, checkpointing=True) < kept_bytes(profile, checkpointing=False)
    # The estimate grows with the batch through the activations alone.
    one = estimate_host_train_ram(model, 1, (1, 32, 40), checkpointing=False, baseline=0,
                                  n_clips=10, profile=profile)
    many = estimate_host_train_ram(model, 9, (1, 32, 40), checkpointing=False, baseline=0,
                                   n_clips=10, profile=profile)
    assert many.activations == pytest.approx(9 * one.activations, rel=1e-6, abs=9)
    assert many.parameters == one.parameters and many.data == one.data == 10 * 4 * 32 * 40


def test_baseline_cnn_has_no_checkpointable_blocks():
    profile = activation_profile(small_model("baseline"), (1, 32, 40))
    assert not any(layer.checkpointable for layer in profile)


def test_largest_batch():
    assert largest_batch(limit=1000, fixed=400, per_clip=100) == 6
    assert largest_batch(limit=300, fixed=400, per_clip=100) == 0


@pytest.mark.slow  # a measurement: a fresh process's RSS depends on what else the machine runs
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and ru_maxrss in KiB")
def test_estimate_within_a_quarter_of_measured_peak_rss():
    """A fresh process estimates, then trains three steps; its peak RSS is within 25%
    (scripts/calibrate_host_ram.py measures the same over rates, batches and widths)."""
    spec = importlib.util.spec_from_file_location("calibrate",
                                                  ROOT / "scripts" / "calibrate_host_ram.py")
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    for mode in ("off", "lean"):
        child = subprocess.run([sys.executable, "-c", calibrate.CHILD, "101", "32", "40", mode],
                               cwd=ROOT, capture_output=True, text=True, check=True)
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        assert 0.75 <= measured["estimate"] / measured["peak"] <= 1.25, (mode, measured)


# --- in a run ----------------------------------------------------------------------------------

def _run_config(manifest, workspace, **overrides):
    from run_helpers import small_run_options

    from edgecl.config import RunConfig

    return RunConfig(**small_run_options(manifest, workspace=str(workspace), **overrides))


def test_checkpointed_and_lean_runs_have_the_plain_runs_accuracy_matrix(six_class_manifest,
                                                                        tmp_path):
    from edgecl.trainer import train

    plain = train(_run_config(six_class_manifest, tmp_path / "plain",
                              activation_checkpointing="off"))
    for mode in ("on", "lean"):
        run = train(_run_config(six_class_manifest, tmp_path / mode,
                                activation_checkpointing=mode))
        assert run["accuracy_matrix"] == plain["accuracy_matrix"], mode
        assert [p["best_val_loss"] for p in run["phases"]] == \
            [p["best_val_loss"] for p in plain["phases"]], mode
        log = (tmp_path / mode / "run" / "train.log").read_text()
        assert "activation checkpointing on" in log
        assert ("freed memory returned to the system" in log) == (mode == "lean")
        estimate = run["provenance"]["host_memory"]
        assert estimate["checkpointing"] is True and estimate["total"] > estimate["baseline"] > 0
        assert estimate["returns_memory"] is (mode == "lean")


def test_lean_estimate_is_below_the_checkpointed_one_once_maps_are_returned():
    model = small_model()
    profile = activation_profile(model, (1, 32, 40))

    def activations(batch, returns):
        return estimate_host_train_ram(model, batch, (1, 32, 40), checkpointing=True,
                                       baseline=0, n_clips=0, profile=profile,
                                       returns_memory=returns).activations

    # At 4 clips no map reaches the block size the allocator returns: lean keeps as much.
    assert activations(4, True) == activations(4, False)
    largest = max(layer.input_bytes for layer in profile)
    batch = int(allocator.RETURNED_BLOCK_BYTES // largest) + 1
    assert activations(batch, True) < activations(batch, False)


def test_an_impossible_max_train_ram_is_refused_before_any_training(six_class_manifest,
                                                                    tmp_path):
    from edgecl.errors import EdgeclError
    from edgecl.trainer import ContinualRun

    with pytest.raises(EdgeclError, match=r"^--max-train-ram 1 MB: training is estimated to peak "
                                          r"at .*; nothing that keeps this model fits"):
        ContinualRun(_run_config(six_class_manifest, tmp_path, max_train_ram="1MB"))
    assert not (tmp_path / "run").exists()


def test_auto_checkpoints_only_when_the_limit_needs_it(six_class_manifest, tmp_path,
                                                       monkeypatch):
    from edgecl.budget import host_ram
    from edgecl.trainer import ContinualRun

    # A baseline of 0 makes the estimate the model's own; put the limit between the plain and
    # the checkpointed estimate.
    monkeypatch.setattr("edgecl.training.host_memory.current_rss_bytes", lambda: 0)
    free = ContinualRun(_run_config(six_class_manifest, tmp_path / "a"))
    assert not free.host_ram.checkpointing and not free.model.backbone.checkpoint_blocks
    profile = host_ram.activation_profile(free.model, free.logmel_shape())
    plain = free.host_ram.total
    checkpointed = plain - host_ram.activation_bytes(profile, 8, False) + \
        host_ram.activation_bytes(profile, 8, True)
    limit = (plain + checkpointed) // 2
    tight = ContinualRun(_run_config(six_class_manifest, tmp_path / "b", max_train_ram=limit))
    assert tight.host_ram.checkpointing and tight.model.backbone.checkpoint_blocks
    assert tight.host_ram.total <= limit
    with pytest.raises(EdgeclError, match=r"would fit: --batch-size \d+"):
        ContinualRun(_run_config(six_class_manifest, tmp_path / "c", max_train_ram=limit,
                                 activation_checkpointing="off"))
    # Under the checkpointed estimate but over the lean one, auto returns freed memory too (at
    # this size only when every map counts as a block the allocator returns).
    monkeypatch.setattr(allocator, "RETURNED_BLOCK_BYTES", 0)
    lean = plain - host_ram.activation_bytes(profile, 8, False) + \
        host_ram.activation_bytes(profile, 8, True, returns_memory=True)
    leaner = ContinualRun(_run_config(six_class_manifest, tmp_path / "d",
                                      max_train_ram=(lean + checkpointed) // 2))
    assert leaner.host_ram.checkpointing and leaner.host_ram.returns_memory
    with pytest.raises(EdgeclError, match=r"with activation checkpointing; would fit: "
                                          r".*--activation-checkpointing auto"):
        ContinualRun(_run_config(six_class_manifest, tmp_path / "e",
                                 max_train_ram=(lean + checkpointed) // 2,
                                 activation_checkpointing="on"))


def test_the_estimate_under_the_caching_allocator_has_no_fragmentation_factor(monkeypatch):
    from edgecl import budget
    from edgecl.budget import host_ram

    model = small_model()
    profile = activation_profile(model, (1, 32, 40))
    plain = host_ram.activation_bytes(profile, 8, checkpointing=False)
    caching = host_ram.activation_bytes(profile, 8, checkpointing=False, caching=True)
    assert caching / plain == pytest.approx(host_ram.CACHING_BACKWARD_FACTOR
                                            / host_ram.BACKWARD_FACTOR, rel=1e-3)
    # A run's plan says which malloc it was estimated for.
    monkeypatch.setattr(allocator, "caching_allocator_loaded", lambda: True)
    plan = budget.host_ram.plan_training_memory(model, 8, (1, 32, 40), mode="off", limit=None,
                                                baseline=0, n_clips=0, n_mels=32)
    assert plan.caching_allocator and plan.as_dict()["caching_allocator"] is True
    assert plan.activations == caching


def test_recalibration_hands_the_training_pages_back_first(monkeypatch):
    from edgecl.training import loop

    calls = []
    monkeypatch.setattr(loop, "purge_caching_allocator", lambda: calls.append("purge"))
    model = small_model()
    clips = torch.randn(6, 1, 32, 40)
    data = loop.PhaseData(features=lambda indices: clips[list(indices)],
                          targets=torch.arange(6) % 4)
    loop.recalibrate_batchnorm(model, data)
    assert calls == ["purge"]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(norm.num_batches_tracked) == 1 for norm in norms)  # one batch of 6
