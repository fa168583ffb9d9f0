"""The trainer keeps to device budgets: memory in bytes per format, steps/MACs per phase, and it
records what every phase spent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fixtures_audio import write_manifest_dataset

from edgecl.budget.macs import ModelMacs, train_step_macs
from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.features import FeatureItem
from edgecl.memory.formats import get_format
from edgecl.samplers import build_sampler
from edgecl.trainer import ContinualRun, train

LABELS = ("a", "b", "c", "d")
CLIP_SAMPLES = 2000  # 0.25 s at 8 kHz
BUDGET_FIELDS = ("memory_bytes", "memory_exemplars", "train_steps", "train_macs",
                 "memory_update_macs", "peak_rss_bytes", "device_train_ram_bytes",
                 "stopped_for_budget", "stopped_by")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest_dataset(tmp_path_factory.mktemp("budget"), labels=LABELS,
                                  clips_per_class=8, test_per_class=2, seconds=0.25,
                                  sample_rate=8000)


def _config(manifest, workspace, **overrides):
    base = dict(dataset="manifest", data_root=str(manifest), workspace=str(workspace), width=8,
                clip_seconds=0.25,
                epochs=1, batch_size=4, patience=0, n_tasks=2, n_init_cls=2, n_cls_a_task=2,
                mem_manage="random", memory_size=6, metric_k=2, export=False, quiet=True,
                threads=1, seed=5)
    base.update(overrides)
    return RunConfig(**base)


def test_step_budget_stops_every_phase_at_exactly_that_many_steps(manifest, tmp_path):
    # Unlimited, each phase would take 3 epochs of >= 3 steps of 4 clips.
    run = ContinualRun(_config(manifest, tmp_path, epochs=3, max_steps=5))
    results = run.run()
    for phase in results["phases"]:
        assert phase["train_steps"] == phase["steps"] == 5
        assert phase["stopped_for_budget"] is True and "stop_reason" not in phase
        assert phase["stopped_by"] == "max_steps"
        assert all(key in phase for key in BUDGET_FIELDS)
    # Five full batches of four clips, each step 3 x the trainable forward per clip.
    last_phase_macs = ModelMacs.of_model(run.model, CLIP_SAMPLES)  # the head as grown last
    assert results["phases"][-1]["train_macs"] == train_step_macs(last_phase_macs, 5 * 4)


def test_mac_budget_is_never_exceeded_in_a_run(manifest, tmp_path):
    from models import FrontEndConfig, build_model

    phase0_model = build_model("bc-resnet", 2, FrontEndConfig.for_sample_rate(8000), width=8)
    per_step = train_step_macs(ModelMacs.of_model(phase0_model, CLIP_SAMPLES), 4)
    budget = int(2.2 * per_step)  # two full steps; a third of two or more clips would overshoot
    results = train(_config(manifest, tmp_path, epochs=3, max_train_macs=budget))
    for phase in results["phases"]:  # a wider head in phase 1 costs a little more per step
        assert phase["train_steps"] == 2 and 2 * per_step <= phase["train_macs"] <= budget
        assert phase["stopped_by"] == "max_train_macs"
    assert results["phases"][0]["train_macs"] == 2 * per_step


def test_without_budgets_training_is_unchanged(manifest, tmp_path):
    results = train(_config(manifest, tmp_path, epochs=2))
    for phase in results["phases"]:
        assert phase["stopped_for_budget"] is False and phase["stopped_by"] in (None, "patience")
        assert phase["train_steps"] == phase["steps"] > 0 and phase["train_macs"] > 0
        assert phase["device_train_ram_bytes"] == phase["device_train_ram"]["total"] > 0


@pytest.mark.parametrize("format_name", ["float32", "pcm16", "mulaw8", "logmel8"])
def test_byte_budget_sets_capacity_and_is_never_exceeded(manifest, tmp_path, format_name):
    budget = 9 * 8008  # nine float32 clips of 0.25 s at 8 kHz (8 bytes of header each)
    run = ContinualRun(_config(manifest, tmp_path, memory_bytes=budget, memory_format=format_name,
                               memory_size=500))
    results = run.run()
    fmt = get_format(format_name)
    shape = (CLIP_SAMPLES,) if fmt.domain == "waveform" else run.logmel_shape()
    for phase in results["phases"]:
        used = phase["memory_bytes"]
        assert used["budget"] == budget and used["per_exemplar"] == fmt.nbytes(shape)
        assert phase["memory_capacity"] == budget // fmt.nbytes(shape)
        assert used["used"] == phase["memory_exemplars"] * used["per_exemplar"] <= budget
        assert phase["memory_format"] == format_name
    # Each phase offers 2 classes x ~7 training clips; a compressed memory keeps more of them.
    assert results["phases"][-1]["memory_exemplars"] == min(results["phases"][-1]["memory_capacity"],
                                                            results["phases"][-1]["n_train"])


def test_replay_trains_on_decoded_exemplars(manifest, tmp_path):
    run = ContinualRun(_config(manifest, tmp_path, memory_format="mulaw8", n_tasks=2))
    run.run()
    # Exemplars stored after phase 0 and still held were trained on in phase 1: their cached
    # features are the front end of the *decoded* mu-law audio, not of the original clip.
    held = [(slot, e) for slot, e in enumerate(run.memory)
            if FeatureItem(e.key, "memory", None) in run.features]
    assert held
    frontend = run.model.frontend.eval()
    for slot, exemplar in held:
        cached = run.features.get([FeatureItem(exemplar.key, "memory", None)])[0]
        with torch.no_grad():
            decoded = frontend(torch.from_numpy(run.memory.decode(slot))[None])[0]
            original = frontend(torch.from_numpy(run.audio.waveform(
                next(lc.clip for t in run.plan.tasks for lc in t.train
                     if str(lc.clip.path) == exemplar.key)))[None])[0]
        assert torch.allclose(cached, decoded, atol=1e-5)
        assert not torch.allclose(cached, original, atol=1e-3)


def test_noisytune_update_macs_are_what_it_ran(manifest, tmp_path):
    run = ContinualRun(_config(manifest, tmp_path, mem_manage="uncertainty",
                               uncert_metric="noisytune", metric_k=4))
    results = run.run()
    first, second = results["phases"]
    assert first["memory_update_macs"] == 0  # phase 0 fills the memory at random
    # Phase 1: one embedding per candidate (memory + new clips, features cached), head k times.
    assert second["memory_update_macs"] == run.sampler.update_macs(
        second["n_train"], ModelMacs.of_model(run.model, CLIP_SAMPLES))


def test_noise_update_counts_full_forwards_and_perturbations(manifest, tmp_path):
    config = _config(manifest, tmp_path, mem_manage="uncertainty", uncert_metric="noise",
                     metric_k=2)
    run = ContinualRun(config)
    results = run.run()
    second = results["phases"][1]
    sampler = build_sampler("uncertainty", {"uncert_metric": "noise", "metric_k": 2})
    assert second["memory_update_macs"] == sampler.update_macs(
        second["n_train"], ModelMacs.of_model(run.model, CLIP_SAMPLES), clip_samples=CLIP_SAMPLES,
        sample_rate=8000)


def test_impossible_byte_budget_is_a_clear_error(manifest, tmp_path):
    with pytest.raises(EdgeclError, match="impossible budget.*4 classes"):
        ContinualRun(_config(manifest, tmp_path, memory_bytes=3 * 8008))


def _tiny_cli(manifest, workspace):
    return ["train", "--dataset", "manifest", "--data-root", str(manifest), "--workspace",
            str(workspace), "--width", "8", "--clip-seconds", "0.25", "--epochs", "1", "--batch-size", "4", "--threads", "1",
            "--n-tasks", "2", "--no-export", "--quiet", "--mem-manage", "random"]


@pytest.mark.parametrize("extra, message", [
    (["--memory-bytes", "3KB"], "--memory-bytes: impossible budget"),
    (["--memory-bytes", "lots"], "--memory-bytes: expected a byte size"),
    (["--memory-bytes", "1MB", "--memory-size", "10"], "--memory-size, --memory-bytes: give one"),
    (["--memory-format", "logmel8", "--mem-manage", "uncertainty", "--uncert-metric", "shift"],
     "--memory-format: logmel8 stores log-mels"),
    (["--max-steps", "0"], "--max-steps: expected a positive number"),
    (["--max-train-macs", "some"], "--max-train-macs: expected a positive count"),
    (["--mode", "finetune", "--memory-bytes", "1MB"], "--memory-bytes: only used with --mode replay"),
])
def test_budget_options_errors(manifest, tmp_path, extra, message):
    args = _tiny_cli(manifest, tmp_path)
    if "--mem-manage" in extra:
        args = args[:-2]
    result = CliRunner().invoke(main, [*args, *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.rglob("results.json"))


def test_cli_budget_run_and_summary_columns(manifest, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, [*_tiny_cli(manifest, tmp_path), "--memory-bytes", "40KB",
                                  "--memory-format", "pcm16", "--max-steps", "2",
                                  "--max-train-macs", "1G"])
    assert result.exit_code == 0, result.output
    [run_dir] = tmp_path.glob("manifest-bc-resnet-replay-random-b40000-pcm16-seed3-*")
    name = run_dir.name
    results = json.loads((tmp_path / name / "results.json").read_text())
    assert results["config"]["memory_bytes"] == 40_000
    assert results["config"]["max_train_macs"] == 10 ** 9
    assert [p["train_steps"] for p in results["phases"]] == [2, 2]
    assert results["phases"][0]["memory_capacity"] == 40_000 // 4008

    rows = json.loads(runner.invoke(main, ["summarize", str(tmp_path), "--json"]).output)
    row = rows[0]
    assert row["format"] == "pcm16" and row["memory"] == 9 and row["steps"] == 4
    assert row["budget_stops"] == 2
    assert row["train_GMAC"] == pytest.approx(sum(p["train_macs"] for p in results["phases"]) / 1e9,
                                              abs=1e-3)
    # Bytes are numbers in --json; the terminal table keeps to 100 columns.
    assert row["memory_bytes_budget"] == 40_000
    assert row["memory_bytes_used"] == 9 * 4008 and row["device_train_ram_bytes"] > 0
    assert np.isfinite(row["update_GMAC"])
    table = runner.invoke(main, ["summarize", str(tmp_path)]).output
    assert "dataset" in table and "seed" in table and "train_GMAC" not in table
    assert max(len(line) for line in table.splitlines()) <= 100


@pytest.mark.parametrize("format_name", ["mulaw8", "logmel8"])
def test_new_clips_are_coded_like_the_exemplars(manifest, tmp_path, format_name):
    run = ContinualRun(_config(manifest, tmp_path, memory_format=format_name))
    fmt, clip = run.memory.format, run.plan.tasks[0].train[0].clip
    raw = run.audio.waveform(clip)
    if fmt.domain == "logmel":
        raw = run.features.get([FeatureItem(str(clip.path), "clip", lambda: raw)])[0].numpy()
    item = run.items.new_clip(clip, run.memory, code=True)
    assert item.source == "coded" and item.key == str(clip.path) and item.domain == fmt.domain
    assert np.array_equal(item.load(), fmt.decode(fmt.encode(raw)))
    assert not np.array_equal(item.load(), raw)
    assert run.items.new_clip(clip, run.memory, code=False).source == "clip"
    run.run()
    coded = [FeatureItem(str(lc.clip.path), "coded", None)
             for task in run.plan.tasks for lc in task.train]
    assert not [item for item in coded if item in run.features]  # freed after each phase


def test_a_mac_budget_below_one_step_is_refused_before_training(manifest, tmp_path):
    """A budget that allows no optimizer step used to train nothing and exit 0 at chance."""
    with pytest.raises(EdgeclError, match=r"--max-train-macs: 10 allows no optimizer step; one "
                                          r"step on a batch of \d+ clips costs [\d,]+ MACs"):
        ContinualRun(_config(manifest, tmp_path, max_train_macs=10))
    assert not list(tmp_path.rglob("results.json"))
