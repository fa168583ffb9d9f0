"""Grid progress on stderr: a tqdm bar on a terminal, otherwise one line per change."""

from __future__ import annotations

import sys
from typing import TextIO


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def progress_line(counts: dict[str, int], eta: float | None) -> str:
    finished = counts["done"] + counts["failed"] + counts["skipped"]
    return (f"grid: {finished}/{counts['total']} finished ({counts['done']} done, "
            f"{counts['skipped']} skipped, {counts['failed']} failed), {counts['running']} running, "
            f"{counts['pending']} pending"
            + (f", {counts['cancelled']} cancelled" if counts.get("cancelled") else "")
            + f", ETA {format_duration(eta)}")


class Progress:
    """Callable(counts, eta) for GridRunner. `tty=None` asks the stream."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._last = None
        self._bar = None

    def __call__(self, counts: dict[str, int], eta: float | None) -> None:
        key = tuple(sorted(counts.items()))
        if key == self._last:
            return
        self._last = key
        finished = counts["done"] + counts["failed"] + counts["skipped"]
        if not self.tty:
            print(progress_line(counts, eta), file=self.stream, flush=True)
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=counts["total"], unit="run", desc="grid", file=self.stream,
                             dynamic_ncols=True)
        self._bar.n = finished
        self._bar.set_postfix_str(f"done {counts['done']} run {counts['running']} "
                                  f"fail {counts['failed']} skip {counts['skipped']} "
                                  f"ETA {format_duration(eta)}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
