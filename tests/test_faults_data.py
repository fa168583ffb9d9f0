"""A run is bound to its data, and bad options and config values are refused before anything is
written: a relative --data-root is the absolute path it names, so a resume or an export from
another folder uses the run's own clips; data that changed since the run started (a clip added,
removed, modified or relabelled) are a one-line error on resume and on export; a dataset moved
whole is accepted at its new place when its fingerprint matches, and recorded; a --config value
of another type than its option's is refused; a clip too short for the model leaves no run
folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from run_helpers import Interrupted, dies_before_committing, one_line_error

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.run_folder import run_plan
from edgecl.trainer import ContinualRun

OPTIONS = {"dataset": "manifest", "width": 8, "epochs": 1, "batch_size": 8, "threads": 1,
           "n_tasks": 2, "memory_size": 8, "export": False, "quiet": True, "exp_name": "run"}


def _copy(source: Path, target: Path, keep_times: bool = True) -> Path:
    """A copy of a dataset folder, with its files' modification times (as `cp -a`) or not."""
    shutil.copytree(source, target, copy_function=shutil.copy2 if keep_times else shutil.copyfile)
    return target


@pytest.fixture
def data(tiny_manifest, tmp_path) -> Path:
    """A private copy of the tiny manifest dataset in tmp_path/a/data (4 classes, 4 train and 2
    test clips each), its times kept."""
    return _copy(tiny_manifest.parent, tmp_path / "a" / "data")


def _interrupted_run(workspace: Path, data_root: str, monkeypatch) -> Path:
    """A run of two tasks killed as it commits phase 1 (phase 0 complete); its folder."""
    config = RunConfig(**OPTIONS, data_root=data_root, workspace=str(workspace))
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        ContinualRun(config).run()
    return workspace / "run"



def _resume(run_dir: Path, *extra: str):
    """`edgecl train --config RUN/config.toml` (the run's own options and name)."""
    return CliRunner().invoke(main, ["train", "--config", str(run_dir / "config.toml"), *extra])


def _rows(manifest: Path) -> list[str]:
    return manifest.read_text().splitlines()


# --- the data root is the absolute path it names ----------------------------------------------

def test_a_relative_data_root_names_the_same_run_as_the_absolute_one(data, monkeypatch):
    monkeypatch.chdir(data.parent)
    relative = RunConfig(**{**OPTIONS, "exp_name": None}, data_root="data/manifest.csv")
    absolute = RunConfig(**{**OPTIONS, "exp_name": None}, data_root=str(data / "manifest.csv"))
    assert relative.data_root == str(data / "manifest.csv")
    assert relative.name == absolute.name
    # An absolute root, and no root at all, keep the names runs had before roots were resolved.
    assert RunConfig().name == ("synthetic-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed3-"
                                "8c6ca28c")
    manifest = RunConfig(dataset="manifest", data_root="/data/m.csv", seed=7, width=8,
                         code_new_clips=False, feature_cache=False)
    assert manifest.name == "manifest-bc-resnet-replay-uncertainty-noisytune-k6-m500-seed7-f2bc4512"


def test_resume_and_export_from_another_folder_use_the_runs_own_data(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data.parent)
    run_dir = _interrupted_run(tmp_path / "ws", "data/manifest.csv", monkeypatch)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["data_root"] == record["data"]["root"] == str(data / "manifest.csv")
    assert record["data"]["clips"] == 24

    # Another folder holding other clips under the same relative path: a decoy.
    decoy = _copy(data, tmp_path / "b" / "data", keep_times=False)
    (decoy / "manifest.csv").write_text("\n".join(_rows(decoy / "manifest.csv")[:-1]) + "\n")
    monkeypatch.chdir(decoy.parent)
    plan_config, split, _ = run_plan(run_dir)
    assert plan_config.data_root == str(data / "manifest.csv")
    assert {clip.path.parent.parent.parent for clip in split.train} == {data}

    result = _resume(run_dir)
    assert result.exit_code == 0, result.output
    assert "resuming at phase 1" in (run_dir / "train.log").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["complete"] is True
    assert results["config"]["data_root"] == str(data / "manifest.csv")

    # The same command typed with the relative root, here, names the decoy: refused, not mixed.
    typed = CliRunner().invoke(main, [
        "train", "--config", str(run_dir / "config.toml"), "--data-root", "data/manifest.csv"])
    one_line_error(typed, str(run_dir), str(data / "manifest.csv"),
                    str(decoy / "manifest.csv"), "differ", "1 clip removed")


# --- data that changed are refused -------------------------------------------------------------

def _add_clip(manifest: Path) -> str:
    clips = manifest.parent / "clips" / "a"
    shutil.copy2(clips / "5.wav", clips / "9.wav")
    manifest.write_text(manifest.read_text() + "clips/a/9.wav,a,train\n")
    return "1 clip added (clips/a/9.wav)"


def _remove_clip(manifest: Path) -> str:
    rows = [row for row in _rows(manifest) if not row.startswith("clips/b/5.wav")]
    manifest.write_text("\n".join(rows) + "\n")
    return "1 clip removed (clips/b/5.wav)"


def _touch_clip(manifest: Path) -> str:
    clip = manifest.parent / "clips" / "c" / "3.wav"
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    return "1 clip changed (clips/c/3.wav: modification time)"


def _rewrite_clip(manifest: Path) -> str:
    from fixtures_audio import fixture_signal, write_wav

    write_wav(manifest.parent / "clips" / "d" / "4.wav", fixture_signal(2500, seed=99), 8000)
    return "1 clip changed (clips/d/4.wav: size, modification time)"


def _relabel_clip(manifest: Path) -> str:
    manifest.write_text(manifest.read_text().replace("clips/a/4.wav,a,", "clips/a/4.wav,b,"))
    return "1 clip changed (clips/a/4.wav: label 'a' -> 'b')"


CHANGES = [_add_clip, _remove_clip, _touch_clip, _rewrite_clip, _relabel_clip]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__[1:] for c in CHANGES])
def test_data_changed_since_the_run_started_are_refused_on_resume_and_export(
        data, tmp_path, monkeypatch, change):
    run_dir = _interrupted_run(tmp_path / "ws", str(data / "manifest.csv"), monkeypatch)
    record = (run_dir / "run.json").read_text()
    what = change(data / "manifest.csv")

    resumed = _resume(run_dir)
    one_line_error(resumed, str(run_dir), "changed since the run started", what, "--overwrite")
    exported = CliRunner().invoke(main, ["export", str(run_dir), "--threads", "1"])
    one_line_error(exported, str(run_dir), "not the ones the run trained on", what)
    assert (run_dir / "run.json").read_text() == record
    assert not (run_dir / "phase_0" / "model.onnx").exists()


def test_a_complete_run_on_changed_data_is_refused_not_skipped(data, tmp_path):
    options = ["train", "--dataset", "manifest", "--data-root", str(data / "manifest.csv"),
               "--workspace", str(tmp_path / "ws"), "--width", "8", "--epochs", "1",
               "--batch-size", "8", "--threads", "1", "--n-tasks", "2", "--memory-size", "8",
               "--no-export", "--quiet", "--exp-name", "run"]
    assert CliRunner().invoke(main, options).exit_code == 0
    what = _add_clip(data / "manifest.csv")
    one_line_error(CliRunner().invoke(main, options), "changed since the run started", what)


# --- a moved dataset -------------------------------------------------------------------------

def test_a_moved_dataset_is_followed_when_its_fingerprint_matches(data, tmp_path, monkeypatch):
    old = str(data / "manifest.csv")
    run_dir = _interrupted_run(tmp_path / "ws", old, monkeypatch)
    moved = tmp_path / "moved"
    shutil.move(data, moved)  # nothing left at the recorded place

    result = _resume(run_dir, "--data-root", str(moved / "manifest.csv"))
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "run.json").read_text())
    new = str(moved / "manifest.csv")
    assert record["config"]["data_root"] == record["data"]["root"] == new
    assert record["data"]["moves"] == [{"from": old, "to": new}]
    assert json.loads((run_dir / "results.json").read_text())["complete"] is True

    # Moved again, then rebuilt for export at the new place: accepted and recorded too.
    again = _copy(moved, tmp_path / "again")
    shutil.rmtree(moved)
    _, split, _ = run_plan(run_dir, data_root=str(again))
    assert all(str(clip.path).startswith(str(again)) for clip in split.train)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["data"]["root"] == str(again)
    assert [m["to"] for m in record["data"]["moves"]] == [new, str(again)]
    plan_config, _, _ = run_plan(run_dir)  # from now on the run's place
    assert plan_config.data_root == str(again)


def test_a_moved_dataset_whose_fingerprint_differs_is_refused(data, tmp_path, monkeypatch):
    run_dir = _interrupted_run(tmp_path / "ws", str(data / "manifest.csv"), monkeypatch)
    record = (run_dir / "run.json").read_text()
    copied = _copy(data, tmp_path / "copied", keep_times=False)  # cp without -a: new times
    edited = _copy(data, tmp_path / "edited")
    _remove_clip(edited / "manifest.csv")

    resumed = _resume(run_dir, "--data-root", str(copied / "manifest.csv"))
    one_line_error(resumed, str(run_dir), "differ from them", "24 clips changed",
                    "only in modification time", "cp -a")
    resumed = _resume(run_dir, "--data-root", str(edited))
    one_line_error(resumed, str(run_dir), "differ from them", "1 clip removed (clips/b/5.wav)")
    exported = CliRunner().invoke(main, ["export", str(run_dir), "--data-root", str(copied)])
    one_line_error(exported, str(run_dir), str(copied), "not the ones the run trained on")
    assert (run_dir / "run.json").read_text() == record


# --- config file values have their option's type -----------------------------------------------

@pytest.mark.parametrize("line, key, expected", [
    ("epochs = true", "epochs", "expects an integer, got true (a boolean)"),
    ("threads = 1.5", "threads", "expects an integer, got 1.5 (a float)"),
    ("epochs = 0.9", "epochs", "expects an integer, got 0.9 (a float)"),
    ("batch-size = 8.0", "batch-size", "expects an integer"),
    ('lr = "0.01"', "lr", "expects a number, got \"0.01\" (a string)"),
    ("lr = false", "lr", "expects a number"),
    ("export = 1", "export", "expects true or false, got 1 (an integer)"),
    ("mode = 3", "mode", "expects one of finetune, replay, joint"),
    ("metric-k = 4.0", "metric-k", "expects one of 2, 4, 6"),
    ("data-root = 5", "data-root", "expects a string"),
])
def test_config_values_of_another_type_are_refused(data, tmp_path, line, key, expected):
    lines = ['dataset = "manifest"', line]
    if key != "data-root":
        lines.append(f'data-root = "{data / "manifest.csv"}"')
    config = tmp_path / "bad.toml"
    config.write_text("\n".join(lines) + "\n")
    workspace = tmp_path / "ws"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--workspace",
                                       str(workspace)])
    one_line_error(result, "--config", str(config), repr(key), expected)
    assert not workspace.exists()


def test_config_values_of_the_options_types_are_taken(tmp_path):
    from edgecl.commands.train import train_command
    from edgecl.config_file import read_config_file

    config = tmp_path / "good.toml"
    config.write_text('lr = 1\nmetric-k = 4\nmemory-bytes = 4000000\nmax-train-macs = "2G"\n'
                      'epochs = 3\nexport = false\nclip-seconds = 1\n')
    types = {param.name: param.type for param in train_command.params}
    assert read_config_file(config, types) == {
        "lr": 1, "metric_k": 4, "memory_bytes": 4000000, "max_train_macs": "2G", "epochs": 3,
        "export": False, "clip_seconds": 1}


# --- a clip too short for the model is refused before the run folder exists --------------------

def test_a_clip_too_short_for_the_model_leaves_no_run_folder(data, tmp_path):
    workspace = tmp_path / "ws"
    args = ["train", "--dataset", "manifest", "--data-root", str(data / "manifest.csv"),
            "--workspace", str(workspace), "--width", "8", "--epochs", "1", "--batch-size", "8",
            "--threads", "1", "--n-tasks", "2", "--memory-size", "8", "--no-export", "--quiet",
            "--exp-name", "run"]
    result = CliRunner().invoke(main, [*args, "--clip-seconds", "0.02"])
    line = one_line_error(result, "--clip-seconds", "0.02 s at 8000 Hz", "give at least")
    assert not workspace.exists()
    shortest = line.split("give at least ")[1].split(" s")[0]
    # The length it names works, and the corrected rerun needs no --overwrite.
    result = CliRunner().invoke(main, [*args, "--clip-seconds", shortest])
    assert result.exit_code == 0, result.output
    assert json.loads((workspace / "run" / "results.json").read_text())["complete"] is True


def test_a_tflm_window_too_short_for_the_model_is_refused_before_the_run_folder(data, tmp_path):
    from edgecl.errors import EdgeclError

    workspace = tmp_path / "ws"
    config = RunConfig(**{**OPTIONS, "export": True}, target="tflm", tflm_window_seconds=0.035,
                       data_root=str(data / "manifest.csv"), workspace=str(workspace))
    with pytest.raises(EdgeclError, match=r"--tflm-window-seconds: a window of 280 samples at "
                                          r"8000 Hz is too short .* give at least"):
        ContinualRun(config)
    assert not workspace.exists()
