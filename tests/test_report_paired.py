"""edgecl report --paired: the exact t distribution, the paired test and the pairing of runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecl.cli import main
from edgecl.report import write_report
from edgecl.report.aggregate import load_workspace
from edgecl.report.paired import paired_comparisons, paired_t_test, student_t_two_sided_p

# Two-sided critical values of Student's t from printed tables: (df, t, p)
TABLE = [(1, 12.706, 0.05), (2, 4.303, 0.05), (3, 3.182, 0.05), (4, 2.776, 0.05),
         (5, 4.032, 0.01), (9, 2.262, 0.05), (10, 3.169, 0.01), (30, 2.042, 0.05)]


@pytest.mark.parametrize("df, t, p", TABLE)
def test_t_distribution_matches_printed_tables(df, t, p):
    assert student_t_two_sided_p(t, df) == pytest.approx(p, abs=2e-4)
    assert student_t_two_sided_p(-t, df) == student_t_two_sided_p(t, df)


def test_t_distribution_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 16):
        for t in (0.0, 0.3, 1.0, 2.5, 7.0):
            assert student_t_two_sided_p(t, df) == pytest.approx(
                2 * stats.t.sf(t, df), abs=1e-12)


def test_paired_t_test_by_hand():
    t, p = paired_t_test([0.1, 0.2, 0.3])  # mean 0.2, std 0.1, n 3
    assert t == pytest.approx(0.2 / (0.1 / math.sqrt(3)))
    assert p == pytest.approx(1 - t / math.sqrt(t * t + 2))  # df 2: P(|T| < t) = t/sqrt(t^2+2)
    assert paired_t_test([0.5]) == (None, None)
    assert paired_t_test([0.0, 0.0]) == (0.0, 1.0)
    assert paired_t_test([-0.1, -0.1]) == (-math.inf, 0.0)
    assert paired_t_test([0.0625 - 0.04375, 0.01875]) == (math.inf, 0.0)  # equal but for rounding
    with pytest.raises(ValueError):
        student_t_two_sided_p(1.0, 0)


BASE = {"dataset": "manifest", "model": "bc-resnet", "n_tasks": 2, "mode": "replay",
        "mem_manage": "random", "memory_size": 500, "epochs": 4}


def _write(ws: Path, name: str, config: dict, a_last: float, bwt: float) -> None:
    (ws / name).mkdir(parents=True)
    results = {"config": config, "phase_accuracy": [0.9, a_last], "tasks": [["a"], ["b"]],
               "accuracy_matrix": [[0.9], [0.5, a_last]], "A_avg": (0.9 + a_last) / 2,
               "A_last": a_last, "BWT": bwt, "forgetting": -bwt,
               "memory_update_seconds": [0.1, 0.1], "train_seconds": [1.0, 1.0],
               "complete": True}
    (ws / name / "results.json").write_text(json.dumps(results))


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "ws"
    # fp32 runs carry no precision (runs from before the option), bf16 runs say so
    for seed, (fp32, bf16) in enumerate([(0.80, 0.70), (0.60, 0.55), (0.70, 0.72)], start=1):
        _write(ws, f"fp32-{seed}", {**BASE, "seed": seed}, fp32, -0.25 * seed)
        _write(ws, f"bf16-{seed}", {**BASE, "seed": seed, "precision": "bf16"}, bf16,
               -0.25 * seed + 0.5)
    _write(ws, "bf16-4", {**BASE, "seed": 4, "precision": "bf16"}, 0.1, 0.0)  # no fp32 partner
    _write(ws, "m50-1", {**BASE, "memory_size": 50, "seed": 1}, 0.5, 0.0)  # no bf16 method
    return ws


def test_methods_that_differ_in_the_option_only_are_paired_by_seed(workspace):
    [pair] = paired_comparisons(load_workspace(workspace), "precision")
    assert (pair["baseline"], pair["other"]) == ("random-m500", "random-m500-bf16")
    assert (pair["baseline_value"], pair["other_value"]) == ("fp32", "bf16")
    assert pair["seeds"] == [1, 2, 3]  # seed 4 has no fp32 run
    a_last = pair["metrics"]["A_last"]
    assert a_last["baseline"] == [0.80, 0.60, 0.70] and a_last["other"] == [0.70, 0.55, 0.72]
    assert a_last["baseline_mean"] == pytest.approx(0.70)
    assert a_last["baseline_std"] == pytest.approx(0.10)
    diffs = [-0.10, -0.05, 0.02]
    mean = sum(diffs) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert a_last["diff_mean"] == pytest.approx(mean) and a_last["diff_std"] == pytest.approx(std)
    assert a_last["t"] == pytest.approx(mean / (std / math.sqrt(3)))
    assert a_last["within_one_baseline_std"] is True  # |0.6567 - 0.70| <= 0.10
    bwt = pair["metrics"]["BWT"]
    assert bwt["diff_mean"] == 0.5 and bwt["t"] == math.inf and bwt["p"] == 0.0


def test_report_writes_the_paired_section(workspace, tmp_path):
    written = write_report(workspace, tmp_path / "out", plots=False, paired="precision")
    md = written["markdown"].read_text()
    assert "## Paired by seed and fold: precision" in md
    row = next(line for line in md.splitlines()
               if line.startswith("| random-m500 | random-m500-bf16 | A_last |"))
    # t and p as scipy.stats.ttest_rel gives them for these runs
    assert row.endswith("| 3 | 0.700 ± 0.100 | 0.657 ± 0.093 | -0.043 ± 0.060 | -1.25 | 0.339 "
                        "| yes |")
    assert "| seed | A_last fp32 | A_last bf16 | A_last difference | BWT fp32 | BWT bf16 " in md
    assert "| 2 | 0.600 | 0.550 | -0.050 | -0.500 | 0.000 | +0.500 |" in md
    document = json.loads(written["json"].read_text())
    assert document["paired"]["option"] == "precision"
    assert document["paired"]["pairs"][0]["seeds"] == [1, 2, 3]
    plain = write_report(workspace, tmp_path / "plain", plots=False)
    assert "Paired" not in plain["markdown"].read_text()
    assert "paired" not in json.loads(plain["json"].read_text())


def test_paired_cli_and_its_errors(workspace, tmp_path):
    result = CliRunner().invoke(main, ["report", str(workspace), "--no-plots",
                                       "--paired", "memory-size"])
    assert result.exit_code == 0, result.output
    assert "| random-m500 | random-m50 | A_last | 1 |" in result.output
    bad = CliRunner().invoke(main, ["report", str(workspace), "--out", str(tmp_path / "bad"),
                                    "--paired", "colour"])
    assert bad.exit_code != 0 and "--paired: 'colour' is not an edgecl train option" in bad.output
    assert not (tmp_path / "bad").exists()  # nothing half-written
