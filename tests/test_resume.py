"""Runs resume: an interrupted run continues from its last completed phase with results identical
to an uninterrupted run (killed for real in the slow test); a complete run is skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_helpers import Interrupted, dies_before_committing, small_run_options

import edgecl.trainer as trainer_module
from edgecl.config import RunConfig
from edgecl.run_state import STATE_NAME, last_state_phase
from edgecl.trainer import ContinualRun, train

# Figures that measure time or the process, not what the run computed.
UNTIMED = {"train_seconds", "memory_update_seconds", "peak_rss_bytes", "epoch_seconds", "seconds",
           "feature_cache", "provenance"}  # provenance: when and by which command


def comparable(results: dict) -> dict:
    """results.json without the timings (and the feature cache's counters, a cache)."""
    out = {k: v for k, v in results.items() if k not in UNTIMED}
    out["phases"] = [{k: v for k, v in p.items() if k not in UNTIMED} for p in results["phases"]]
    out["config"] = {k: v for k, v in results["config"].items() if k != "workspace"}
    return out


def memory_contents(memory) -> list:
    return [(e.key, e.target, e.encoded.payload.tobytes(), e.encoded.shape, e.encoded.scale,
             e.encoded.offset) for e in memory]


@pytest.mark.parametrize("mem_manage, memory_format, extra", [
    ("reservoir", "float32", {}),  # sampler state: the seen count
    ("prototype", "mulaw8", {}),  # class means kept across phases; coded new clips
    ("uncertainty", "logmel8", {"uncert_metric": "noisytune", "metric_k": 2}),  # rng-driven
])
def test_interrupted_run_resumes_with_identical_results(six_class_manifest, tmp_path, monkeypatch,
                                                        mem_manage, memory_format, extra):
    options = small_run_options(six_class_manifest, mem_manage=mem_manage,
                                memory_format=memory_format, **extra)
    straight = ContinualRun(RunConfig(**options, workspace=str(tmp_path / "straight")))
    expected = straight.run()

    config = RunConfig(**options, workspace=str(tmp_path / "resumed"))
    # Phase 1's checkpoint is on disk, its state not.
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        ContinualRun(config).run()
    run_dir = tmp_path / "resumed" / "run"
    assert last_state_phase(run_dir) == 0 and (run_dir / "phase_1" / "checkpoint.pt").exists()
    assert json.loads((run_dir / "results.json").read_text())["complete"] is False

    resumed = ContinualRun(config)
    results = resumed.run()
    assert comparable(results) == comparable(expected)
    assert comparable(json.loads((run_dir / "results.json").read_text())) == comparable(expected)
    assert memory_contents(resumed.memory) == memory_contents(straight.memory)
    assert resumed.sampler.get_state().keys() == straight.sampler.get_state().keys()
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    log = (run_dir / "train.log").read_text()
    assert "resuming at phase 1" in log and log.count("phase 0: new classes") == 1
    assert "thread(s)" not in log  # same thread count: nothing to note
    assert sorted(p.name for p in run_dir.glob("phase_*/" + STATE_NAME)) == [STATE_NAME]
    assert last_state_phase(run_dir) == 2


def test_run_killed_in_phase_0_starts_again_from_phase_0(six_class_manifest, tmp_path, monkeypatch):
    options = small_run_options(six_class_manifest, mode="finetune", n_tasks=2)
    expected = train(RunConfig(**options, workspace=str(tmp_path / "straight")))
    config = RunConfig(**options, workspace=str(tmp_path / "resumed"))

    with dies_before_committing(monkeypatch, 0), pytest.raises(Interrupted):
        train(config)
    assert (tmp_path / "resumed" / "run" / "phase_0" / "checkpoint.pt").exists()
    assert comparable(train(config)) == comparable(expected)
    assert "resuming at phase 0" in (tmp_path / "resumed" / "run" / "train.log").read_text()


def test_resume_on_another_thread_count_says_so(six_class_manifest, tmp_path, monkeypatch):
    """Threads are not part of a run's identity, but they change torch's float sums: a run
    resumed on another count than its first phases ran on says so in train.log."""
    options = small_run_options(six_class_manifest, mode="finetune", n_tasks=2)
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        train(RunConfig(**options, workspace=str(tmp_path)))
    results = train(RunConfig(**{**options, "threads": 2}, workspace=str(tmp_path)))
    assert results["complete"] and results["provenance"]["threads"] == 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "phases 0-0 ran on 1 thread(s), this session on 2" in log


def test_run_killed_after_its_last_phase_writes_its_results(six_class_manifest, tmp_path,
                                                            monkeypatch):
    config = RunConfig(**small_run_options(six_class_manifest, mode="finetune", n_tasks=2),
                       workspace=str(tmp_path))
    real_write = trainer_module.write_results

    def die_on_complete(run_dir, results):
        if results["complete"]:
            raise Interrupted
        return real_write(run_dir, results)

    monkeypatch.setattr(trainer_module, "write_results", die_on_complete)
    with pytest.raises(Interrupted):
        train(config)
    monkeypatch.undo()
    run = ContinualRun(config)
    results = run.run()
    assert results["complete"] and not run.skipped and len(results["phase_accuracy"]) == 2
    assert "every phase is complete" in (tmp_path / "run" / "train.log").read_text()


def test_run_begun_with_the_conv_front_end_resumes_with_it(six_class_manifest, tmp_path,
                                                            monkeypatch):
    """A run interrupted before the STFT implementation was chosen by rate (its checkpoints hold
    the conv DFT and no stft_impl) keeps its conv front end when resumed, instead of failing to
    load the checkpoint into today's 8 kHz default (the factored DFT)."""
    from models.frontend import FrontEndConfig, LogMelFrontEnd

    config = RunConfig(**small_run_options(six_class_manifest, n_tasks=2, mode="replay",
                                           mem_manage="random"), workspace=str(tmp_path))
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        train(config)
    monkeypatch.undo()
    checkpoint_file = tmp_path / "run" / "phase_0" / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_file, weights_only=True)
    old = {k: v for k, v in checkpoint["model_config"]["frontend"].items() if k != "stft_impl"}
    conv = LogMelFrontEnd(FrontEndConfig.from_dict(old))  # what such a checkpoint holds
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("frontend.")}
    state.update({f"frontend.{k}": v for k, v in conv.state_dict().items()})
    checkpoint["state_dict"], checkpoint["model_config"]["frontend"] = state, old
    torch.save(checkpoint, checkpoint_file)

    run = ContinualRun(config)
    assert run.model.frontend.stft_impl == "factored"  # today's default at 8 kHz
    results = run.run()
    assert results["complete"] and len(results["phase_accuracy"]) == 2
    assert run.model.frontend.stft_impl == "conv" and run.features.frontend is run.model.frontend
    saved = torch.load(tmp_path / "run" / "phase_1" / "checkpoint.pt", weights_only=True)
    assert saved["model_config"]["frontend"]["stft_impl"] == "conv"
    assert "front end the run started with" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
def test_resumed_run_exports_the_same_bytes(six_class_manifest, tmp_path, monkeypatch):
    from firmware_export import int8_search

    # The histogram calibrators (Percentile, Entropy) crash in this onnxruntime on tiny runs
    # (an upstream ValueError in collect_absolute_value); MinMax recipes do not.
    monkeypatch.setitem(int8_search.search_int8.__kwdefaults__, "recipes",
                        tuple(r for r in int8_search.BASE_RECIPES if r.calibration == "MinMax"))
    options = small_run_options(six_class_manifest, n_tasks=2, export=True, mem_manage="random")
    train(RunConfig(**options, workspace=str(tmp_path / "straight")))
    config = RunConfig(**options, workspace=str(tmp_path / "resumed"))
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        train(config)
    train(config)

    def bundles(workspace):
        run_dir = workspace / "run"
        return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.glob("phase_*/*")
                if p.name not in (STATE_NAME, "checkpoint.pt")}

    expected = bundles(tmp_path / "straight")
    assert any(name.endswith(".onnx") for name in expected)
    assert bundles(tmp_path / "resumed") == expected


def test_complete_run_is_skipped_and_overwrite_runs_again(six_class_manifest, tmp_path):
    config = RunConfig(**small_run_options(six_class_manifest, mode="finetune", n_tasks=2),
                       workspace=str(tmp_path))
    first = train(config)
    log = (tmp_path / "run" / "train.log").read_text()
    run = ContinualRun(config)
    assert run.run() == json.loads(json.dumps(first)) and run.skipped
    assert (tmp_path / "run" / "train.log").read_text() == log  # nothing written
    again = ContinualRun(config, overwrite=True)
    again.run()
    assert not again.skipped
    assert (tmp_path / "run" / "train.log").read_text().count("run run: finetune") == 1


def _cli(manifest, workspace) -> list[str]:
    return [sys.executable, "-m", "edgecl", "train", "--dataset", "manifest", "--data-root",
            str(manifest), "--width", "8", "--epochs", "6", "--patience", "0", "--batch-size",
            "8", "--n-tasks", "3", "--n-init-cls", "2", "--n-cls-a-task", "2", "--memory-size",
            "7", "--mem-manage", "prototype", "--memory-format", "pcm16", "--seed", "5",
            "--threads", "1", "--no-export", "--quiet", "--workspace", str(workspace),
            "--exp-name", "run"]


def _final_state(run_dir: Path):
    from edgecl.run_state import load_state

    payload = load_state(run_dir, last_state_phase(run_dir))
    memory = [(e["key"], e["target"], e["payload"].numpy().tobytes(), e["shape"])
              for e in payload["memory"]["exemplars"]]
    means = {t: m.numpy().tobytes() for t, m in payload["sampler"]["class_means"].items()}
    return memory, means, payload["rng"], payload["torch_rng"].numpy().tobytes()


@pytest.mark.slow
def test_killed_run_resumes_with_identical_results(six_class_manifest, tmp_path):
    repo = Path(__file__).parents[1]
    subprocess.run(_cli(six_class_manifest, tmp_path / "straight"), check=True, cwd=repo)

    killed = tmp_path / "killed" / "run"
    process = subprocess.Popen(_cli(six_class_manifest, tmp_path / "killed"), cwd=repo)
    try:
        deadline = time.monotonic() + 120
        while not (killed / "phase_0" / STATE_NAME).exists():  # phase 0 committed
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert last_state_phase(killed) == 0, "the run got past phase 1 before the kill"

    resumed = subprocess.run(_cli(six_class_manifest, tmp_path / "killed"), cwd=repo, text=True,
                             capture_output=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at phase 1" in (killed / "train.log").read_text()
    expected = json.loads((tmp_path / "straight" / "run" / "results.json").read_text())
    results = json.loads((killed / "results.json").read_text())
    assert results["complete"] and comparable(results) == comparable(expected)
    assert _final_state(killed) == _final_state(tmp_path / "straight" / "run")
    for phase in range(3):
        a = torch.load(killed / f"phase_{phase}" / "checkpoint.pt", weights_only=True)
        b = torch.load(tmp_path / "straight" / "run" / f"phase_{phase}" / "checkpoint.pt",
                       weights_only=True)
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])

    again = subprocess.run(_cli(six_class_manifest, tmp_path / "killed"), cwd=repo, text=True,
                           capture_output=True)
    assert again.returncode == 0 and "already complete, skipped" in again.stdout
