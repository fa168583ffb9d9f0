"""Output that tells the run's story: metrics.csv per epoch, progress lines without a terminal."""

from __future__ import annotations

import csv
import io

from edgecl.config import RunConfig
from edgecl.progress import ProgressLines, RunEstimate, format_duration
from edgecl.trainer import ContinualRun


def test_a_run_without_a_terminal_prints_progress_lines_and_writes_metrics_csv(tiny_manifest,
                                                                              tmp_path, capsys):
    config = RunConfig(dataset="manifest", data_root=str(tiny_manifest), workspace=str(tmp_path),
                       width=8, epochs=3, batch_size=8, patience=0, n_tasks=2, n_init_cls=2,
                       n_cls_a_task=2, memory_size=4, export=False, threads=1, seed=1)
    run = ContinualRun(config, show_progress=False)
    run.lines.every = 0.0  # every epoch, for the test
    results = run.run()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("phase ") and "epoch" in line]
    assert lines[0].startswith("phase 1/2 epoch 1: loss ")
    assert any(line.startswith("phase 2/2 epoch 3") for line in lines)
    assert "left in the run" in lines[0]
    with (tmp_path / config.name / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    epochs = [phase["epochs_run"] for phase in results["phases"]]
    assert len(rows) == sum(epochs) == 6
    assert [int(row["phase"]) for row in rows] == [0, 0, 0, 1, 1, 1]
    assert [int(row["steps"]) for row in rows[:3]] == sorted(int(r["steps"]) for r in rows[:3])
    assert all(float(row["train_loss"]) > 0 and 0 <= float(row["val_accuracy"]) <= 1
               for row in rows)


def test_the_estimate_learns_from_early_stopping():
    estimate = RunEstimate(n_phases=3, max_epochs=30)
    estimate.epoch_done(2.0, n_train=100)  # 0.02 s per clip-epoch
    # First phase, no phase finished yet: assume the epoch limit everywhere.
    assert estimate.remaining_seconds(0, 0, 100) == (29 + 2 * 30) * 2.0
    estimate.phase_done(epochs=10)  # early stopping ended phase 0 after 10 epochs
    assert estimate.remaining_seconds(1, 4, 100) == (5 + 1 * 10) * 2.0


def test_progress_lines_are_throttled_and_durations_read_well():
    stream = io.StringIO()
    lines = ProgressLines(stream, every=3600)
    lines.epoch(0, 5, 0, 1.2346, 0.5, 125.0)
    lines.epoch(0, 5, 1, 1.0, 0.6, 100.0)  # within the interval: not printed
    assert stream.getvalue() == ("phase 1/5 epoch 1: loss 1.235, validation 50.0%, about 2 min "
                                 "left in the run\n")
    assert format_duration(12) == "12 s" and format_duration(3 * 3600 + 300) == "3 h 05 min"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_export_progress_prints_each_phase_and_throttles_its_steps(monkeypatch):
    from edgecl.progress import ExportProgress

    clock = _Clock()
    monkeypatch.setattr("edgecl.progress.time.monotonic", clock)
    stream = io.StringIO()
    progress = ExportProgress(2, stream=stream, terminal=False, every=5.0)
    progress.start(3)
    progress.step("fp32 export and parity")  # within 5 s of the phase's line: held back
    clock.now += 6
    progress.step("int8 candidate 2 (per-tensor, MinMax, uint8 activations)")
    progress.finish()
    progress.start(4)
    assert stream.getvalue().splitlines() == [
        "export phase 3 (1/2): started (0 s in)",
        "export phase 3 (1/2): int8 candidate 2 (per-tensor, MinMax, uint8 activations) (6 s in)",
        "export phase 4 (2/2): started (0 s in)"]


def test_export_progress_is_a_bar_in_a_terminal_and_silent_when_quiet():
    from edgecl.progress import ExportProgress

    stream = io.StringIO()
    bar = ExportProgress(1, stream=stream, terminal=True)
    bar.start(0)
    bar.step("int8 candidate 1")
    bar.step("int8 candidate 2")
    assert bar._bar.n == 2 and "int8 candidate 2" in bar._bar.postfix
    bar.finish()
    assert bar._bar is None
    quiet = io.StringIO()
    silent = ExportProgress(1, stream=quiet, terminal=False, quiet=True)
    silent.start(0)
    silent.step("int8 candidate 1")
    silent.finish()
    assert quiet.getvalue() == ""
