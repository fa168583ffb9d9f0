"""What a run tells while it trains: a per-epoch metrics.csv, and progress lines for logs.

In a terminal the trainer shows a tqdm bar per phase. Without one (a pipe, nohup, CI) it prints a
line per epoch, at most one every LINE_SECONDS, with the phase, the figures and an estimate of the
whole run's remaining time. The estimate learns from early stopping: a phase is expected to run as
many epochs as the finished phases did on average (the epoch limit until one has finished), at the
seconds per training clip measured so far.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import TextIO

METRICS_NAME = "metrics.csv"
METRICS_COLUMNS = ("phase", "epoch", "steps", "train_loss", "val_accuracy", "seconds")
LINE_SECONDS = 5.0


class MetricsLog:
    """RUN/metrics.csv: one row per epoch, appended and flushed as it happens (any plotting tool
    reads it while the run goes on)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / METRICS_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._handle = self.path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        if new:
            self._writer.writerow(METRICS_COLUMNS)
            self._handle.flush()

    def add(self, phase: int, epoch: int, steps: int, loss: float, accuracy: float | None,
            seconds: float) -> None:
        self._writer.writerow([phase, epoch, steps, f"{loss:.6g}",
                               "" if accuracy is None else f"{accuracy:.6g}", f"{seconds:.3f}"])
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def truncate_metrics(run_dir: str | Path, last_phase: int | None) -> None:
    """Keep metrics.csv's rows of phases up to `last_phase` (none when None): the rows of a phase
    that was interrupted (and a row cut short by the kill) go, so its epochs, trained again on
    resume, are not listed twice. The header and the kept rows are left byte for byte."""
    from edgecl.fileio import atomic_write_bytes

    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return
    text = path.read_bytes()
    lines = text.split(b"\n")  # csv ends rows in "\r\n"; what follows the last "\n" was cut short
    if len(lines) < 2:
        return
    limit = -1 if last_phase is None else last_phase
    kept = [row for row in lines[1:-1] if _row_phase(row) <= limit]
    wanted = b"".join(line + b"\n" for line in [lines[0], *kept])
    if wanted != text:
        atomic_write_bytes(path, wanted)


def _row_phase(row: bytes) -> float:
    """The phase of a metrics.csv row; infinity for a row that is not one (cut short)."""
    fields = row.split(b",")
    if len(fields) != len(METRICS_COLUMNS) or not fields[0].isdigit():
        return float("inf")
    return int(fields[0])


class RunEstimate:
    """Remaining time of a run of `n_phases` phases with at most `max_epochs` epochs each."""

    def __init__(self, n_phases: int, max_epochs: int) -> None:
        self.n_phases, self.max_epochs = n_phases, max_epochs
        self.finished_epochs: list[int] = []
        self.clip_epoch_seconds: list[float] = []  # seconds per training clip per epoch

    def epoch_done(self, seconds: float, n_train: int) -> None:
        self.clip_epoch_seconds.append(seconds / max(1, n_train))

    def phase_done(self, epochs: int) -> None:
        self.finished_epochs.append(epochs)

    def remaining_seconds(self, phase: int, epoch: int, n_train: int) -> float | None:
        """After `epoch` (0-based) of `phase`, assuming later phases train about `n_train` clips."""
        if not self.clip_epoch_seconds:
            return None
        per_epoch = n_train * sum(self.clip_epoch_seconds) / len(self.clip_epoch_seconds)
        expected = (sum(self.finished_epochs) / len(self.finished_epochs)
                    if self.finished_epochs else self.max_epochs)
        this_phase = max(0.0, min(self.max_epochs, max(expected, epoch + 1)) - (epoch + 1))
        later = (self.n_phases - phase - 1) * expected
        return (this_phase + later) * per_epoch


class ProgressLines:
    """Throttled one-line progress reports for a stream that is not a terminal."""

    def __init__(self, stream: TextIO | None = None, every: float = LINE_SECONDS) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._last = float("-inf")

    def epoch(self, phase: int, n_phases: int, epoch: int, loss: float,
              accuracy: float | None, remaining: float | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        validation = "-" if accuracy is None else f"{100 * accuracy:.1f}%"
        left = "" if remaining is None else f", about {format_duration(remaining)} left in the run"
        print(f"phase {phase + 1}/{n_phases} epoch {epoch + 1}: loss {loss:.3f}, validation "
              f"{validation}{left}", file=self.stream, flush=True)


def format_duration(seconds: float) -> str:
    """12 s, 4 min, 1 h 05 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


class ExportProgress:
    """What an export tells while it works: the phase and the step (the fp32 check, each int8
    candidate, the TFLM build). In a terminal a tqdm bar per phase counts the steps and shows the
    current one; without one a line per step, at most one every `every` seconds; nothing when
    quiet. `step` is the callback the exporter is given; with `n_phases` > 1 the title counts
    the phases started."""

    def __init__(self, n_phases: int, *, quiet: bool = False, terminal: bool | None = None,
                 stream: TextIO | None = None, every: float = LINE_SECONDS) -> None:
        self.stream = stream or sys.stderr
        self.n_phases, self.quiet, self.every = n_phases, quiet, every
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self._bar = None
        self._title = ""
        self._started = self._last = float("-inf")
        self._done = 0

    def start(self, phase: int) -> None:
        self.finish()
        self._done += 1
        self._title = f"export phase {phase}" + (f" ({self._done}/{self.n_phases})"
                                                 if self.n_phases > 1 else "")
        self._started = time.monotonic()
        if self.quiet:
            return
        if self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(desc=self._title, unit="step", file=self.stream, leave=False)
        else:
            self._line("started", force=True)

    def step(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(text)
        else:
            self._line(text)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        print(f"{self._title}: {text} ({format_duration(now - self._started)} in)",
              file=self.stream, flush=True)
