"""Every bundle carries its head's analytic state (firmware_export.analytic_fit): the exporter fits
it on the phase's clips and memory as `edgecl device fit` would, reports both heads' held-out
accuracy, withholds a state over the memory budget, and the trainer hands it the clips the phase
trained on (memory included, recorded for `edgecl export`) or, in --mode analytic, its own state."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from export_helpers import CLASSES, SAMPLE_RATE, exported_bundle, tones
from run_helpers import small_run_options

import firmware_export.run_export as run_export
from edgecl.config import RunConfig
from edgecl.trainer import ContinualRun
from firmware_export.analytic_fit import REPLAYED_NAME, AnalyticFit, fit_phase_state
from firmware_export.device.analytic_state import BundleState
from firmware_export.device.head_graph import trained_head
from firmware_export.device.layout import ANALYTIC_STATE, MODEL_EMBEDDING, MODEL_FP32
from firmware_export.device.learn import embed_clips, fit_bundle_state

pytestmark = pytest.mark.filterwarnings("ignore")


@dataclass(frozen=True)
class FileClip:
    path: Path


def _clips(root: Path, n: int, seed: int) -> tuple[list[FileClip], list[str], dict]:
    root.mkdir(parents=True, exist_ok=True)
    waves, targets = tones(n, seed=seed)
    clips = []
    for k, wave in enumerate(waves):
        sf.write(root / f"clip_{k}.wav", wave, SAMPLE_RATE, subtype="FLOAT")
        clips.append(FileClip(root / f"clip_{k}.wav"))
    return clips, [CLASSES[t] for t in targets], dict(zip(clips, waves, strict=True))


def _outcome(fit: AnalyticFit, folder: Path, holdout: tuple[np.ndarray, list[str]]):
    manifest = json.loads((folder / "manifest.json").read_text())
    embedding = (folder / MODEL_EMBEDDING).read_bytes()
    held = embed_clips(folder, manifest, holdout[0])
    return fit_phase_state(fit, embedding, CLASSES, holdout_embeddings=held,
                           holdout_labels=holdout[1],
                           trained=trained_head(onnx.load(str(folder / MODEL_FP32))),
                           backbone_sha256=hashlib.sha256(embedding).hexdigest())


def test_the_exporters_state_is_the_one_device_fit_makes_with_both_heads_accuracy(tmp_path):
    bundle = tmp_path / "phase_0"
    shutil.copytree(exported_bundle().folder, bundle)
    clips, labels, waves = _clips(tmp_path / "fit", 24, seed=1)
    holdout_clips, holdout_labels, _ = _clips(tmp_path / "holdout", 12, seed=3)
    holdout = ([c.path for c in holdout_clips], holdout_labels)
    fit = AnalyticFit(clips=list(zip(clips, labels, strict=True)), waveform=waves.__getitem__,
                      fit={"new_clips": 24}, gamma=0.1)
    outcome = _outcome(fit, bundle, holdout)
    fit_bundle_state(bundle, [c.path for c in clips], labels, gamma=0.1, holdout=holdout)
    by_device_fit = BundleState.from_bytes((bundle / ANALYTIC_STATE).read_bytes(), "fit")
    by_export = BundleState.from_bytes(outcome.files[ANALYTIC_STATE], "export")
    np.testing.assert_array_equal(by_export.head.w, by_device_fit.head.w)
    np.testing.assert_array_equal(by_export.embeddings, by_device_fit.embeddings)
    assert by_export.clip_sha256 == by_device_fit.clip_sha256
    assert by_export.backbone_sha256 == by_device_fit.backbone_sha256
    assert by_export.lineage[0]["at"] is None and by_export.lineage[0]["by"] == "export"
    section = outcome.section
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert section["holdout_accuracy"] == manifest["analytic"]["holdout_accuracy"]
    assert section["holdout_accuracy"]["clips"] == 12
    assert section["status"] == "shipped" and section["fit"] == {"new_clips": 24}
    d = by_export.head.dim + 1
    assert section["update_macs_per_clip"] == 2 * d * d + d * len(CLASSES)
    assert {"rls.h", "rls.c", ANALYTIC_STATE} == set(outcome.files)
    again = _outcome(fit, bundle, holdout)  # the same clips give the same bytes
    assert again.files == outcome.files


def test_a_state_over_the_memory_budget_is_withheld_with_the_reason(tmp_path):
    bundle = exported_bundle().folder
    clips, labels, waves = _clips(tmp_path / "fit", 16, seed=4)
    fit = AnalyticFit(clips=list(zip(clips, labels, strict=True)), waveform=waves.__getitem__,
                      gamma=0.1, budget_bytes=100)
    outcome = _outcome(fit, bundle, ([c.path for c in clips[:4]], labels[:4]))
    assert outcome.files == {}
    assert outcome.section["status"] == "withheld"
    assert outcome.section["reason"].startswith("analytic state ")
    assert "over --memory-bytes 100 B" in outcome.section["reason"]
    assert outcome.section["state_bytes_fp32"] > 100


def _captured_fits(monkeypatch) -> list:
    """Replace the export by one that records its AnalyticFit and ships nothing."""
    seen = []

    def capture(model, phase_dir, *, phase, analytic, **kwargs):
        seen.append((phase, analytic))
        return {"device_model": "model.onnx",
                "artifacts": {"int8": {"status": "withheld", "reason": "not built"}}}

    monkeypatch.setattr(run_export, "export_seen_tasks", capture)
    return seen


def test_the_trainer_fits_on_the_new_clips_and_the_memory_it_trained_with(
        six_class_manifest, tmp_path, monkeypatch):
    seen = _captured_fits(monkeypatch)
    memory_at_start = []
    real = ContinualRun.train_phase

    def spy(self, phase, tasks):
        memory_at_start.append(self.memory.keys())
        return real(self, phase, tasks)

    monkeypatch.setattr(ContinualRun, "train_phase", spy)
    run = ContinualRun(RunConfig(**small_run_options(six_class_manifest, export=True),
                                 workspace=str(tmp_path)))
    run.run()
    assert [phase for phase, _ in seen] == [0, 1, 2]
    for (phase, fit), keys, task in zip(seen, memory_at_start, run.plan.tasks, strict=True):
        assert fit.state is None and fit.fit["new_clips"] == len(task.train)
        assert fit.fit["memory_clips"] == len(keys) == (0 if phase == 0 else 7)
        assert [str(clip.path) for clip, _ in fit.clips] == \
            [str(lc.clip.path) for lc in task.train] + keys
        seen_names = [c for t in run.plan.tasks[:phase + 1] for c in t.classes]
        assert {label for _, label in fit.clips} == set(seen_names)
        positions = json.loads((run.run_dir / f"phase_{phase}" / REPLAYED_NAME).read_text())
        assert [str(run.plan.tasks[t].train[k].clip.path)
                for t, k in positions["memory"]] == keys


def test_an_analytic_run_ships_its_own_state_which_forgets_exactly(
        six_class_manifest, tmp_path, monkeypatch):
    seen = _captured_fits(monkeypatch)
    run = ContinualRun(RunConfig(**small_run_options(six_class_manifest, mode="analytic",
                                                     export=True, memory_size=500),
                                 workspace=str(tmp_path)))
    results = run.run()
    phase, fit = seen[-1]
    (step,) = [s for s in run.steps if hasattr(s, "bundle_state")]
    state = fit.state
    assert phase == 2 and state is not None
    np.testing.assert_array_equal(state.head.w, step.head.w)
    assert state.head.labels == [run.plan.class_order[int(t)] for t in step.head.labels]
    assert len(state.clip_sha256) == sum(len(t.train) for t in run.plan.tasks)
    # The state forgets the last task's clips exactly: back to phase 1's head.
    r_before = state.head.r.copy()
    last = run.plan.tasks[-1]
    for name in last.classes:
        rows = [i for i, label in enumerate(state.clip_labels) if label == name]
        state.head.forget(state.embeddings[rows], name,
                          np.asarray([state.clip_weights[i] for i in rows]))
    previous = seen[1][1].state.head
    np.testing.assert_allclose(state.head.w, previous.w, atol=1e-8)
    assert not np.allclose(r_before, state.head.r)
    assert results["phases"][2]["memory_bytes"]["used"] == results["phases"][2]["analytic"][
        "state_bytes"]
    assert results["phases"][2]["memory_update_macs"] == results["phases"][2]["analytic"][
        "update_macs"]


def test_memory_bytes_budgets_an_analytic_runs_state_and_a_miss_is_recorded(
        six_class_manifest, tmp_path, monkeypatch):
    from edgecl.errors import EdgeclError

    seen = _captured_fits(monkeypatch)
    run = ContinualRun(RunConfig(**small_run_options(
        six_class_manifest, mode="analytic", export=True, memory_size=500, memory_bytes=1400),
        workspace=str(tmp_path)))
    results = run.run()
    sizes = [p["analytic"]["state_bytes"] for p in results["phases"]]
    assert sizes[0] <= 1400 < sizes[-1]  # 4 (21 * 22 / 2 + 21 C + 40) bytes: grows past it
    for phase, size in zip(results["phases"], sizes, strict=True):
        assert phase["memory_bytes"]["budget"] == 1400
        assert phase["analytic"].get("over_budget", False) == (size > 1400)
    assert {fit.budget_bytes for _, fit in seen} == {1400}  # the exporter withholds it too
    assert "over --memory-bytes 1400" in (run.run_dir / "train.log").read_text()
    with pytest.raises(EdgeclError, match="--memory-bytes: only used with --mode replay"):
        RunConfig(mode="finetune", memory_bytes=1000)
