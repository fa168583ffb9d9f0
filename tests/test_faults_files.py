"""Files edgecl reads back are untrusted: a damaged results.json, run.json, config.toml, state.pt,
checkpoint or feature-store entry is named and skipped (report, summarize), a one-line error naming
it (train, export) or recomputed (the feature store). Also: JSON output is strict, a failed
checkpoint write is a one-line error leaving no temporary file, provenance keeps each phase's
thread count, and a WAV whose name is not UTF-8 loads."""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_audio import fixture_signal, write_wav
from run_helpers import Interrupted, dies_before_committing, one_line_error, small_run_options

from edgecl.cli import main

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _strict_json(text: str):
    """json.loads that refuses NaN and infinities (as strict JSON parsers do)."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)



def _train_args(manifest: Path, workspace: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "manifest", "--data-root", str(manifest), "--workspace",
            str(workspace), "--exp-name", "run", "--width", "8", "--epochs", "1",
            "--batch-size", "8", "--threads", "1", "--n-tasks", "2", "--memory-size", "8",
            "--no-export", "--quiet", *extra]


@pytest.fixture(scope="module")
def trained(tiny_manifest, tmp_path_factory) -> tuple[Path, Path]:
    """(manifest, workspace) of one complete two-phase run `run`, trained once for the module."""
    workspace = tmp_path_factory.mktemp("trained") / "ws"
    result = CliRunner().invoke(main, _train_args(tiny_manifest, workspace))
    assert result.exit_code == 0, result.output
    return tiny_manifest, workspace


@pytest.fixture
def run_copy(trained, tmp_path) -> tuple[Path, Path]:
    """(manifest, workspace) holding a private copy of the trained run."""
    manifest, workspace = trained
    copy = tmp_path / "ws"
    shutil.copytree(workspace / "run", copy / "run")
    return manifest, copy


# --- report and summarize skip a damaged results.json and name it ------------------------------

GOOD = {"config": {"dataset": "manifest", "mode": "finetune", "seed": 1, "epochs": 1},
        "classes": ["a", "b"], "tasks": [["a"], ["b"]], "phase_accuracy": [0.9, 0.6],
        "accuracy_matrix": [[0.9], [0.5, 0.7]], "A_avg": 0.75, "A_last": 0.6, "BWT": -0.4,
        "forgetting": 0.4, "memory_update_seconds": [None, None], "train_seconds": [1.0, 2.0],
        "memory_balance": [None, None], "phases": [{}, {}], "complete": True}

BROKEN = [
    ("empty-list", b"[]", "expected a JSON object"),
    ("wrong-types", json.dumps({**GOOD, "A_avg": "high"}).encode(), "field 'A_avg'"),
    ("nested-wrong-type", json.dumps({**GOOD, "phases": [{"memory_bytes": {"used": "x"}}, {}]}
                                     ).encode(), "memory_bytes"),
    ("not-utf8", b'{"config": {"dataset": "\xff\xfe"}}', "not readable JSON"),
    ("truncated", json.dumps(GOOD).encode()[:40], "not readable JSON"),
    ("empty-object", b"{}", "missing fields 'config', 'phase_accuracy'"),
    ("short-lists", json.dumps({**GOOD, "train_seconds": [1.0]}).encode(), "train_seconds"),
]


def _workspace_with(tmp_path: Path, content: bytes) -> tuple[Path, Path]:
    workspace = tmp_path / "ws"
    for name in ("good", "bad"):
        (workspace / name).mkdir(parents=True)
    (workspace / "good" / "results.json").write_text(json.dumps(GOOD))
    bad = workspace / "bad" / "results.json"
    bad.write_bytes(content)
    return workspace, bad


@pytest.mark.parametrize("content, reason", [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_summarize_names_a_broken_results_file_and_lists_the_rest(tmp_path, content, reason):
    workspace, bad = _workspace_with(tmp_path, content)
    result = CliRunner().invoke(main, ["summarize", str(workspace)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("unreadable: "))
    assert warning.startswith(f"unreadable: {bad}: ") and reason in warning, warning
    rows = _strict_json(CliRunner().invoke(main, ["summarize", str(workspace), "--json"]).output)
    assert [(r["run"], r["status"]) for r in rows] == [("bad", "unreadable"), ("good", "complete")]
    assert rows[1]["A_last"] == 0.6


@pytest.mark.parametrize("content, reason", [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_report_skips_a_broken_results_file_with_a_warning(tmp_path, content, reason):
    workspace, bad = _workspace_with(tmp_path, content)
    result = CliRunner().invoke(main, ["report", str(workspace), "--no-plots"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"{bad}: " in warnings[0] and reason in warnings[0], warnings
    document = _strict_json((workspace / "report" / "report.json").read_text())
    assert [m["runs"] for m in document["methods"]] == [1]
    assert document["methods"][0]["A_last_mean"] == 0.6
    assert len(document["unreadable"]) == 1 and str(bad) in document["unreadable"][0]
    assert str(bad) in (workspace / "report" / "report.md").read_text()


def test_report_names_a_broken_grid_state(tmp_path):
    workspace, _ = _workspace_with(tmp_path, json.dumps(GOOD).encode())
    (workspace / "grid.json").write_text(json.dumps({"trials": ["not", "an", "object"]}))
    result = CliRunner().invoke(main, ["report", str(workspace), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert f"warning: skipped {workspace / 'grid.json'}: field 'trials'" in result.stderr
    assert "2 complete runs" in result.stdout


# --- JSON output is strict: no bare NaN or Infinity ---------------------------------------------

def test_summarize_and_report_json_have_no_bare_nan(tmp_path):
    workspace = tmp_path / "ws"
    (workspace / "nan").mkdir(parents=True)
    results = {**GOOD, "A_avg": math.nan, "BWT": math.inf}
    (workspace / "nan" / "results.json").write_text(json.dumps(results))  # NaN, Infinity
    output = CliRunner().invoke(main, ["summarize", str(workspace), "--json"]).output
    row, = _strict_json(output)
    assert row["status"] == "complete" and row["A_avg"] is None and row["BWT"] is None
    assert row["A_last"] == 0.6
    result = CliRunner().invoke(main, ["report", str(workspace), "--no-plots"])
    assert result.exit_code == 0, result.output
    document = _strict_json((workspace / "report" / "report.json").read_text())
    assert document["methods"][0]["A_avg_mean"] is None
    assert document["methods"][0]["A_last_mean"] == 0.6


# --- train and export: a damaged file is a one-line error naming it -----------------------------

@pytest.mark.parametrize("content", [b"[]", b'{"config": []}', b"\xff\xfe{", b'{"config": {'],
                         ids=["list", "config-not-object", "not-utf8", "truncated"])
def test_train_on_a_broken_run_record_names_it(run_copy, content):
    manifest, workspace = run_copy
    (workspace / "run" / "run.json").write_bytes(content)
    result = CliRunner().invoke(main, _train_args(manifest, workspace))
    one_line_error(result, str(workspace / "run" / "run.json"), "--overwrite")


def _unfinished(workspace: Path) -> None:
    """Mark the run's results as those of a run killed after its last phase's commit."""
    path = workspace / "run" / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "complete": False}))


@pytest.mark.parametrize("state", ["garbage", "wrong-shape", "wrong-phase"])
def test_resume_on_a_broken_state_names_it(run_copy, state):
    import torch

    manifest, workspace = run_copy
    _unfinished(workspace)
    path = workspace / "run" / "phase_1" / "state.pt"
    if state == "garbage":
        path.write_bytes(os.urandom(300))
    else:
        payload = torch.load(path, weights_only=True)
        if state == "wrong-shape":
            payload["memory"] = {"capacity": "eight"}
        else:
            payload["phase"] = 0
        torch.save(payload, path)
    result = CliRunner().invoke(main, _train_args(manifest, workspace))
    one_line_error(result, str(path), "--overwrite")


def test_resume_on_a_broken_checkpoint_names_it(run_copy):
    manifest, workspace = run_copy
    _unfinished(workspace)
    path = workspace / "run" / "phase_1" / "checkpoint.pt"
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    result = CliRunner().invoke(main, _train_args(manifest, workspace))
    one_line_error(result, str(path))


@pytest.mark.parametrize("content", [b"[]", b"{}", b"\xff\xfe", b'{"phase_accuracy": [0.5]'],
                         ids=["list", "empty-object", "not-utf8", "truncated"])
def test_train_rebuilds_a_broken_results_file_from_the_run_state(run_copy, content):
    manifest, workspace = run_copy
    path = workspace / "run" / "results.json"
    before = json.loads(path.read_text())
    path.write_bytes(content)
    result = CliRunner().invoke(main, _train_args(manifest, workspace))
    assert result.exit_code == 0, result.output
    after = json.loads(path.read_text())
    assert after["complete"] is True
    assert after["accuracy_matrix"] == before["accuracy_matrix"]


@pytest.mark.parametrize("content", [b"\xff\xfeepochs = 1", b"epochs = [", b"[table]\nx = 1"],
                         ids=["not-utf8", "not-toml", "table"])
def test_train_with_a_broken_config_file_names_it(run_copy, content):
    manifest, workspace = run_copy
    path = workspace / "run" / "config.toml"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["train", "--config", str(path)])
    one_line_error(result, str(path))


@pytest.mark.parametrize("content", [b"[]", b'{"config": "x"}', b"\xff\xfe", b"{"],
                         ids=["list", "config-not-object", "not-utf8", "truncated"])
def test_export_on_broken_results_names_them(run_copy, content):
    _, workspace = run_copy
    path = workspace / "run" / "results.json"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["export", str(workspace / "run"), "--threads", "1"])
    one_line_error(result, str(path))


def test_export_on_a_broken_checkpoint_names_it(run_copy):
    _, workspace = run_copy
    path = workspace / "run" / "phase_0" / "checkpoint.pt"
    path.write_bytes(os.urandom(200))
    result = CliRunner().invoke(main, ["export", str(workspace / "run"), "--phase", "0",
                                       "--threads", "1"])
    one_line_error(result, str(path))


# --- a damaged feature-store entry is recomputed ------------------------------------------------

def _accuracies(results: dict) -> tuple:
    return results["phase_accuracy"], results["accuracy_matrix"], results["A_avg"]


def _damage(entry: Path, how: str) -> None:
    stored = np.load(entry)
    if how == "wrong-shape":
        np.save(entry, np.zeros((1, 3, 5), dtype=np.float32))
    elif how == "wrong-dtype":
        np.save(entry, stored.astype(np.float64))
    elif how == "nan":
        np.save(entry, np.full_like(stored, np.nan))
    elif how == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    else:
        entry.write_bytes(os.urandom(entry.stat().st_size))


@pytest.mark.parametrize("how", ["wrong-shape", "wrong-dtype", "nan", "truncated", "garbage"])
def test_damaged_feature_store_entries_are_recomputed(trained, tmp_path, how):
    manifest, trained_workspace = trained
    workspace = tmp_path / "ws"
    shutil.copytree(trained_workspace / "features", workspace / "features")
    entries = sorted((workspace / "features").rglob("*.npy"))
    assert entries
    for entry in entries:
        _damage(entry, how)
    result = CliRunner().invoke(main, _train_args(manifest, workspace))
    assert result.exit_code == 0, result.output
    results = json.loads((workspace / "run" / "results.json").read_text())
    without_store = json.loads((trained_workspace / "run" / "results.json").read_text())
    assert _accuracies(results) == _accuracies(without_store)
    cache = results["phases"][0]["feature_cache"]
    assert cache["loaded"] == 0 and cache["computed"] > 0
    for entry in entries:  # written again, sound
        features = np.load(entry)
        assert features.dtype == np.float32 and np.isfinite(features).all()
        assert features.shape != (1, 3, 5)


def test_feature_store_rejects_entries_of_another_shape(tmp_path):
    from edgecl.feature_store import FeatureStore

    clip = tmp_path / "clip.wav"
    write_wav(clip, fixture_signal(800, seed=1), 8000)
    store = FeatureStore(tmp_path / "features", frontend={"n_mels": 8}, sample_rate=8000,
                         clip_samples=800)
    store.save(clip, np.ones((1, 8, 4), dtype=np.float32))
    assert store.load(clip, (1, 8, 4)) is not None
    assert store.load(clip, (1, 8, 5)) is None and store.rejected == 1


# --- a failed checkpoint write --------------------------------------------------------------

@pytest.mark.slow  # a CLI process of its own: about 20 s on a loaded machine
def test_checkpoint_write_past_the_file_size_limit_is_one_line(tiny_manifest, tmp_path):
    """Under RLIMIT_FSIZE the run's small files fit, phase 0's checkpoint does not."""
    workspace = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    done = subprocess.run([sys.executable, "-m", "edgecl", *_train_args(tiny_manifest, workspace),
                           "--no-feature-store"], capture_output=True, text=True, env=env,
                          preexec_fn=limit, timeout=300)
    checkpoint = workspace / "run" / "phase_0" / "checkpoint.pt"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0] == f"edgecl: error: {checkpoint}: could not write (File too large)"
    assert not checkpoint.exists()
    assert not [p for p in (workspace / "run").rglob("*") if p.name.startswith(".checkpoint")]


def test_atomic_torch_save_reports_a_full_disk_in_one_line(tmp_path, monkeypatch):
    import errno

    import torch

    from edgecl.errors import EdgeclError
    from edgecl.run_folder import save_checkpoint

    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def open_full(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle) if "w" in mode and ".checkpoint.pt." in str(path) else handle

    monkeypatch.setattr("builtins.open", open_full)
    model = torch.nn.Linear(4, 2)
    model.model_config = lambda: {}
    target = tmp_path / "phase_0" / "checkpoint.pt"
    with pytest.raises(EdgeclError) as error:
        save_checkpoint(target, model, classes=["a"], phase=0, exp_name="run")
    assert str(error.value) == f"{target}: could not write (No space left on device)"
    assert list(target.parent.iterdir()) == []


# --- provenance keeps every phase's thread count ------------------------------------------------

def test_resumed_run_keeps_each_phases_thread_count(tiny_manifest, tmp_path, monkeypatch):
    from edgecl.config import RunConfig
    from edgecl.trainer import train

    options = small_run_options(tiny_manifest, workspace=str(tmp_path), mode="finetune",
                                memory_size=None, n_tasks=2, epochs=1)
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        train(RunConfig(**options))
    results = train(RunConfig(**{**options, "threads": 2}))
    assert results["provenance"]["threads"] == 2
    assert results["provenance"]["phase_threads"] == [1, 2]
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["provenance"]["phase_threads"] == [1, 2]
    assert [phase["threads"] for phase in written["phases"]] == [1, 2]


# --- a WAV whose name is not UTF-8 -------------------------------------------------------------

def test_wav_with_a_non_utf8_name_loads(tmp_path):
    from edgecl.audio import audio_info, load_audio

    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.wav")
    samples = fixture_signal(800, seed=3)
    write_wav(tmp_path / "plain.wav", samples, 8000)
    os.rename(tmp_path / "plain.wav", name)
    expected = load_audio(os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.wav"), 8000)
    assert expected.shape == (800,) and np.abs(expected).max() > 0
    as_text = os.fsdecode(name)  # what os.listdir gives for such a name
    assert np.array_equal(load_audio(as_text, 8000), expected)
    assert audio_info(as_text).frames == 800 and audio_info(name).sample_rate == 8000


# --- a bundle manifest whose file table is damaged ---------------------------------------------

@pytest.mark.parametrize("entry", ["abc", {"bytes": "12", "sha256": "00"}, {"sha256": "00"}])
def test_bundle_manifest_with_a_damaged_file_entry_is_refused(tmp_path, entry):
    from edgecl.errors import EdgeclError
    from firmware_export.device.layout import MANIFEST, MANIFEST_FORMAT
    from firmware_export.device.manifest import verify_bundle

    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT,
                                                 "files": {"model.onnx": entry}}))
    with pytest.raises(EdgeclError) as error:
        verify_bundle(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / MANIFEST}: ") and "'files'" in message
    assert "\n" not in message
