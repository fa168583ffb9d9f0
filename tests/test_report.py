"""edgecl report: numbers against a hand computation on a fixture workspace, files and plots."""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecl.cli import main
from edgecl.report import write_report
from edgecl.report.aggregate import load_workspace, mean_std, method_label

BASE = {"dataset": "ESC-50", "data_root": "/data/esc50", "model": "bc-resnet", "width": 40,
        "n_tasks": 2, "n_init_cls": 10, "n_cls_a_task": 10, "epochs": 30,
        "memory_format": "float32", "memory_bytes": None}


def _results(config, phase_accuracy, a_avg, bwt, forgetting, mem, train, complete=True):
    return {"config": config, "phase_accuracy": phase_accuracy, "tasks": [["a"], ["b"]],
            "accuracy_matrix": [[phase_accuracy[0]], [0.5, phase_accuracy[-1]]][:len(phase_accuracy)],
            "A_avg": a_avg, "A_last": phase_accuracy[-1], "BWT": bwt, "forgetting": forgetting,
            "memory_update_seconds": mem, "train_seconds": train, "complete": complete}


def _write(ws: Path, name: str, results: dict) -> None:
    (ws / name).mkdir(parents=True)
    (ws / name / "results.json").write_text(json.dumps(results))


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    finetune = {**BASE, "mode": "finetune"}
    random = {**BASE, "mode": "replay", "mem_manage": "random", "memory_size": 500}
    # finetune: two seeds, same fold. (workspace, exp_name, threads differ: not part of a method)
    _write(ws, "ft-1", _results({**finetune, "seed": 1, "test_fold": 1, "exp_name": "ft-1",
                                 "workspace": "a", "threads": 1},
                                [0.9, 0.5], 0.7, -0.9, 0.9, [None, None], [10.0, 20.0]))
    _write(ws, "ft-2", _results({**finetune, "seed": 2, "test_fold": 1, "exp_name": "ft-2",
                                 "workspace": "b", "threads": 2},
                                [0.8, 0.4], 0.6, -0.7, 0.7, [None, None], [5.0, 15.0]))
    # random m500: three runs over seeds and folds
    _write(ws, "sub/rnd-1", _results({**random, "seed": 1, "test_fold": 1},
                                     [1.0, 0.8], 0.9, -0.4, 0.4, [0.1, 0.3], [1.0, 2.0]))
    _write(ws, "sub/rnd-2", _results({**random, "seed": 2, "test_fold": 2},
                                     [0.9, 0.7], 0.8, -0.2, 0.2, [0.2, 0.2], [2.0, 2.0]))
    _write(ws, "sub/rnd-3", _results({**random, "seed": 3, "test_fold": 3},
                                     [0.8, 0.9], 0.85, 0.0, 0.0, [1.0, 2.0], [3.0, 2.0]))
    # an incomplete run of the same method: listed, never averaged
    _write(ws, "rnd-4", _results({**random, "seed": 4, "test_fold": 1},
                                 [0.1], 0.1, None, None, [9.0], [99.0], complete=False))
    # one run of another memory size
    _write(ws, "rnd-m300", _results({**random, "memory_size": 300, "seed": 1, "test_fold": 1},
                                    [0.9, 0.6], 0.75, -0.3, 0.3, [0.4, 0.6], [4.0, 4.0]))
    # a failed grid trial that left no results
    (ws / "grid.json").write_text(json.dumps({"trials": {
        "rnd-1": {"status": "done", "method": "random-m500"},
        "broken-seed1": {"status": "failed", "method": "broken",
                         "error": "Traceback\nedgecl: error: --n-tasks: 40 tasks need 40 classes"}}}))
    return ws


def _by_method(rows):
    return {row["method"]: row for row in rows}


def test_numbers_equal_a_hand_computation(workspace):
    rows = _by_method([group.stats() for group in load_workspace(workspace).groups])
    assert list(rows) == ["finetune", "random-m500", "random-m300"]
    ft, rnd, m300 = rows["finetune"], rows["random-m500"], rows["random-m300"]
    s2 = math.sqrt(2) * 0.05  # std of two values 0.05 either side of their mean
    assert ft["runs"] == 2 and ft["seeds"] == [1, 2]
    assert ft["A_avg_mean"] == pytest.approx(0.65) and ft["A_avg_std"] == pytest.approx(s2)
    assert ft["A_last_mean"] == pytest.approx(0.45) and ft["A_last_std"] == pytest.approx(s2)
    assert ft["BWT_mean"] == pytest.approx(-0.8) and ft["BWT_std"] == pytest.approx(2 * s2)
    assert ft["forgetting_mean"] == pytest.approx(0.8) and ft["forgetting_std"] == pytest.approx(2 * s2)
    assert ft["mem_update_s_mean"] is None and ft["mem_update_s_std"] is None
    assert ft["train_s_mean"] == pytest.approx(25.0)  # totals 30 and 20
    assert ft["train_s_std"] == pytest.approx(math.sqrt(50))
    assert rnd["runs"] == 3 and rnd["seeds"] == [1, 2, 3] and rnd["folds"] == [1, 2, 3]
    assert rnd["A_last_mean"] == pytest.approx(0.8) and rnd["A_last_std"] == pytest.approx(0.1)
    assert rnd["A_avg_mean"] == pytest.approx(0.85) and rnd["A_avg_std"] == pytest.approx(0.05)
    assert rnd["BWT_mean"] == pytest.approx(-0.2) and rnd["BWT_std"] == pytest.approx(0.2)
    assert rnd["forgetting_mean"] == pytest.approx(0.2) and rnd["forgetting_std"] == pytest.approx(0.2)
    # seconds per memory update: run means 0.2, 0.2, 1.5
    assert rnd["mem_update_s_mean"] == pytest.approx(1.9 / 3)
    dev = [0.2 - 1.9 / 3, 0.2 - 1.9 / 3, 1.5 - 1.9 / 3]
    assert rnd["mem_update_s_std"] == pytest.approx(math.sqrt(sum(d * d for d in dev) / 2))
    assert rnd["train_s_mean"] == pytest.approx(4.0) and rnd["train_s_std"] == pytest.approx(1.0)
    assert m300["runs"] == 1 and m300["A_last_mean"] == pytest.approx(0.6)
    assert m300["A_last_std"] is None and m300["mem_update_s_mean"] == pytest.approx(0.5)


def test_incomplete_and_failed_runs_are_listed_apart(workspace):
    ws = load_workspace(workspace)
    listed = {item["run"]: item for item in ws.incomplete}
    assert set(listed) == {"rnd-4", "broken-seed1"}
    assert listed["rnd-4"]["reason"].startswith("incomplete: 1 of 2 phases")
    assert "--n-tasks" in listed["broken-seed1"]["reason"]


def test_report_files_hold_the_same_numbers(workspace, tmp_path):
    out = tmp_path / "out"
    written = write_report(workspace, out)
    doc = json.loads((out / "report.json").read_text())
    rnd = _by_method(doc["methods"])["random-m500"]
    assert isinstance(rnd["A_last_mean"], float) and rnd["A_last_mean"] == pytest.approx(0.8)
    assert rnd["options"]["memory_size"] == 500 and sorted(rnd["run_names"]) == [
        "sub/rnd-1", "sub/rnd-2", "sub/rnd-3"]
    assert {i["run"] for i in doc["incomplete"]} == {"rnd-4", "broken-seed1"}
    with open(out / "report.csv", newline="") as handle:
        rows = _by_method(list(csv.DictReader(handle)))
    assert float(rows["random-m500"]["BWT_mean"]) == pytest.approx(-0.2)
    assert rows["finetune"]["mem_update_s_mean"] == ""
    md = (out / "report.md").read_text()
    assert "| random-m500 | 3 | 0.850 ± 0.050 | 0.800 ± 0.100 | -0.200 ± 0.200 |" in md
    assert "| random-m300 | 1 | 0.750 | 0.600 |" in md
    assert "## Incomplete or failed runs (not averaged)" in md and "broken-seed1" in md
    assert len(written["plots"]) == 2 + 3


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_pngs(workspace, tmp_path):
    out = tmp_path / "out"
    write_report(workspace, out)
    paths = [out / "accuracy_per_phase.png", out / "efficiency.png",
             out / "matrix" / "finetune.png", out / "matrix" / "random-m500.png",
             out / "matrix" / "random-m300.png"]
    for path in paths:
        width, height = _png_size(path)
        assert width > 200 and height > 150
    import matplotlib.image

    assert matplotlib.image.imread(paths[0]).shape[2] in (3, 4)


def test_report_cli_defaults_to_workspace_report_and_ignores_its_own_output(workspace):
    for _ in range(2):  # the second run must not read the first one's folder as runs
        result = CliRunner().invoke(main, ["report", str(workspace)])
        assert result.exit_code == 0, result.output
    assert "3 methods, 6 complete runs, 2 incomplete or failed" in result.output
    assert (workspace / "report" / "report.md").is_file()


def test_groups_that_share_a_label_are_told_apart(workspace):
    config = {**BASE, "mode": "finetune", "epochs": 5, "seed": 1, "test_fold": 1}
    _write(workspace, "ft-e5", _results(config, [0.9, 0.5], 0.7, -0.9, 0.9, [None, None],
                                        [1.0, 1.0]))
    labels = [g.label for g in load_workspace(workspace).groups]
    assert "finetune (epochs=5)" in labels and "finetune (epochs=30)" in labels


def test_method_labels_and_mean_std():
    assert method_label({"mode": "joint"}) == "joint"
    assert method_label({"mode": "replay", "mem_manage": "uncertainty", "uncert_metric": "noise",
                         "metric_k": 4, "memory_size": 300}) == "uncertainty-noise-k4-m300"
    assert method_label({"mode": "replay", "mem_manage": "uncertainty",
                         "uncert_metric": "noisytune", "metric_k": 6, "uncert_trim": 0.5,
                         "memory_size": 50, "weight_align": True, "balanced_epochs": 5,
                         "balanced_lr": 1e-4}) == "uncertainty-noisytune-k6-trim0.5-m50-wa-bft5"
    assert method_label({"mode": "replay", "mem_manage": "reservoir", "memory_size": 50,
                         "balanced_epochs": 3, "balanced_lr": 1e-3}) == "reservoir-m50-bft3lr0.001"
    assert mean_std([]) == (None, None) and mean_std([2.0]) == (2.0, None)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


def test_missing_workspace_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "expected a workspace folder" in result.output


def test_deployed_bias_correction_adds_the_uncorrected_a_last(workspace, tmp_path):
    assert "A_last uncorrected" not in (write_report(workspace, tmp_path / "before", plots=False)
                                        ["markdown"].read_text())
    bicd = {**BASE, "mode": "replay", "mem_manage": "prototype", "memory_size": 50,
            "bias_correction": "deployed"}
    for seed, (corrected, uncorrected) in enumerate([(0.9, 0.8), (0.7, 0.7)], start=1):
        results = _results({**bicd, "seed": seed, "test_fold": 1}, [1.0, corrected], 0.9, -0.1,
                           0.1, [0.1, 0.1], [1.0, 1.0])
        results["uncorrected"] = {"A_last": uncorrected}
        _write(workspace, f"bicd-{seed}", results)
    written = write_report(workspace, tmp_path / "after", plots=False)
    rows = _by_method(json.loads(written["json"].read_text())["methods"])
    assert rows["prototype-m50-bicd"]["A_last_mean"] == pytest.approx(0.8)
    assert rows["prototype-m50-bicd"]["A_last_uncorrected_mean"] == pytest.approx(0.75)
    assert rows["finetune"]["A_last_uncorrected_mean"] is None
    md = written["markdown"].read_text()
    assert "| A_last uncorrected |" in md and md.count("| prototype-m50-bicd | 2 |") == 1
    assert md.split("| prototype-m50-bicd | 2 |")[1].split("\n")[0].endswith(
        "| 0.750 ± 0.071 |")
