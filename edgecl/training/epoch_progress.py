"""What a phase's training shows after each epoch: the tqdm bar in a terminal, the run log's
epoch line, RUN/metrics.csv, and the throttled progress lines with the run's remaining time
(edgecl.progress)."""

from __future__ import annotations

import sys
import time

from edgecl.progress import MetricsLog
from edgecl.training.phase_report import percent


class EpochProgress:
    """The `progress` callback of edgecl.training.fit for one phase of `n_train` clips; close it
    when the phase's training ends."""

    def __init__(self, phase: int, n_train: int, *, epochs: int, run_dir, log, estimate,
                 lines, show_bar: bool) -> None:
        from tqdm import tqdm

        self.phase, self.n_train = phase, n_train
        self.log, self.estimate, self.lines = log, estimate, lines
        self.bar = tqdm(total=epochs, desc=f"phase {phase}", unit="epoch", file=sys.stderr,
                        disable=not show_bar, leave=False)
        self.metrics = MetricsLog(run_dir)
        self.started = self.last = time.perf_counter()

    def __call__(self, epoch: int, loss: float, accuracy: float | None, steps=None) -> None:
        now = time.perf_counter()
        self.estimate.epoch_done(now - self.last, self.n_train)
        self.last = now
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", val=percent(accuracy))
        self.log.write_only(f"    epoch {epoch}: loss {loss:.4f}, validation {percent(accuracy)}")
        self.metrics.add(self.phase, epoch, steps, loss, accuracy, now - self.started)
        if self.lines is not None:
            self.lines.epoch(self.phase, self.estimate.n_phases, epoch, loss, accuracy,
                             self.estimate.remaining_seconds(self.phase, epoch, self.n_train))

    def close(self) -> None:
        self.bar.close()
        self.metrics.close()
