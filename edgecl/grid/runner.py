"""Running a grid: skip complete runs, run the rest through an executor, retry, record.

The runner is independent of Ray: an executor submits trials and reports finished ones
(edgecl.grid.executors has the Ray one and a local thread-pool one). Each trial runs
`python -m edgecl train ...` as a subprocess, so a crash or a kill takes down that trial only.

State goes to WORKSPACE/grid.json, rewritten atomically after every change:
{"spec", "workspace", "started", "updated", "counts", "trials": {name: {...}}} where each trial has
status (pending, running, done, skipped, failed, cancelled), method, seed, fold, options,
attempts, seconds (of the last attempt), returncode and error (the last lines of stderr).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgecl.fileio import atomic_write_json
from edgecl.grid.memory import TrialMemory
from edgecl.grid.spec import Trial
from edgecl.results import RESULTS_NAME

GRID_STATE = "grid.json"
STDERR_TAIL_LINES = 20


@dataclass
class Outcome:
    """What one attempt of a trial produced."""

    returncode: int
    seconds: float
    stderr_tail: str = ""
    complete: bool = False  # results.json says complete after the attempt

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.complete


def run_is_complete(run_dir: str | Path) -> bool:
    """True when run_dir/results.json exists and says "complete": true."""
    path = Path(run_dir) / RESULTS_NAME
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the trial gets SIGTERM if the process that started it dies (a killed Ray worker)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_train_subprocess(train_args: Sequence[str], run_dir: str, python: str | None = None,
                         started: Callable[[subprocess.Popen], None] | None = None,
                         env: dict[str, str] | None = None) -> Outcome:
    """Run `python -m edgecl train ARGS` to the end, with `env` added to this process's
    environment (e.g. the trial's CUDA_VISIBLE_DEVICES); on KeyboardInterrupt (Ctrl-C, or Ray's
    cancel) terminate the child, wait for it, and re-raise."""
    from edgecl.device import deterministic_cuda_env

    cmd = [python or sys.executable, "-m", "edgecl", "train", *train_args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    deterministic_cuda_env(env)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, preexec_fn=_die_with_parent
                            if sys.platform.startswith("linux") else None)
    if started is not None:
        started(proc)
    try:
        _, stderr = proc.communicate()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    tail = "\n".join(stderr.decode("utf-8", "replace").strip().splitlines()[-STDERR_TAIL_LINES:])
    return Outcome(proc.returncode, time.monotonic() - start, tail, run_is_complete(run_dir))


def _exit_description(returncode: int) -> str:
    if returncode == 0:
        return "exited 0 but results.json is not complete"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    return f"exit code {returncode}"


class Executor(Protocol):
    """Runs trials concurrently. `capacity` trials at once; `wait` returns finished ones;
    `device`: the --device every trial is given."""

    capacity: int
    device: str

    def submit(self, trial: Trial, train_args: list[str], run_dir: str) -> Any: ...

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Outcome]]: ...

    def cancel(self, handles: list[Any]) -> None: ...

    def close(self) -> None: ...


class GridRunner:
    """Runs `trials` in `workspace` through `executor`; returns the final grid state."""

    def __init__(self, trials: Sequence[Trial], workspace: str | Path, executor: Executor, *,
                 spec_name: str = "", retries: int = 1, threads: int = 1,
                 progress: Callable[[dict[str, int], float | None], None] | None = None,
                 memory: TrialMemory | None = None) -> None:
        self.trials = list(trials)
        self.memory = memory  # starts trials only while their estimated peaks fit (grid.memory)
        self.workspace = Path(workspace).absolute()
        self.executor = executor
        self.retries = retries
        self.threads = threads
        self.progress = progress
        self.state: dict[str, Any] = {
            "spec": spec_name, "workspace": str(self.workspace),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trials": {}}
        self._durations: list[float] = []

    # --- state ---------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = {s: 0 for s in ("done", "running", "pending", "failed", "skipped", "cancelled")}
        for entry in self.state["trials"].values():
            counts[entry["status"]] += 1
        counts["total"] = len(self.state["trials"])
        return counts

    def eta_seconds(self) -> float | None:
        """Time left: mean attempt time so far x attempts left / concurrency."""
        if not self._durations:
            return None
        c = self.counts()
        left = c["pending"] + c["running"]
        mean = sum(self._durations) / len(self._durations)
        at_once = self.executor.capacity
        if self.memory is not None:
            at_once = self.memory.parallelism(self.trials, at_once)
        return mean * left / max(1, min(at_once, left or 1))

    def _save(self) -> None:
        self.state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.state["counts"] = self.counts()
        atomic_write_json(self.workspace / GRID_STATE, self.state)
        if self.progress:
            self.progress(self.state["counts"], self.eta_seconds())

    def _set(self, trial: Trial, **fields: Any) -> None:
        self.state["trials"][trial.name].update(fields)

    # --- running -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.workspace.mkdir(parents=True, exist_ok=True)
        queue: list[Trial] = []
        for trial in self.trials:
            complete = run_is_complete(self.workspace / trial.name)
            self.state["trials"][trial.name] = {
                "status": "skipped" if complete else "pending", "method": trial.method,
                "seed": trial.seed, "fold": trial.fold, "options": trial.options,
                "attempts": 0, "seconds": None, "returncode": None, "error": None}
            if not complete:
                queue.append(trial)
        self._save()
        in_flight: dict[Any, Trial] = {}
        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.executor.capacity and (
                        self.memory is None or self.memory.fits(queue[0])):
                    trial = queue.pop(0)
                    if self.memory is not None:
                        self.memory.take(trial)
                    entry = self.state["trials"][trial.name]
                    args = trial.train_args(self.workspace, self.threads,
                                            getattr(self.executor, "device", None))
                    handle = self.executor.submit(trial, args, str(self.workspace / trial.name))
                    in_flight[handle] = trial
                    self._set(trial, status="running", attempts=entry["attempts"] + 1)
                    self._save()
                for handle, outcome in self.executor.wait(list(in_flight), timeout=1.0):
                    trial = in_flight.pop(handle)
                    if self.memory is not None:
                        self.memory.release(trial)
                    self._finish(trial, outcome, queue)
        except BaseException:  # Ctrl-C (KeyboardInterrupt) or anything else: stop cleanly
            self.executor.cancel(list(in_flight))
            for trial in in_flight.values():
                self._set(trial, status="cancelled", error="cancelled (interrupted)")
            for trial in queue:
                self._set(trial, status="cancelled")
            self._save()
            raise
        return self.state

    def _finish(self, trial: Trial, outcome: Outcome, queue: list[Trial]) -> None:
        self._durations.append(outcome.seconds)
        entry = self.state["trials"][trial.name]
        fields = {"seconds": round(outcome.seconds, 3), "returncode": outcome.returncode}
        if outcome.ok:
            self._set(trial, status="done", error=None, **fields)
        else:
            error = outcome.stderr_tail or _exit_description(outcome.returncode)
            if entry["attempts"] <= self.retries:
                self._set(trial, status="pending", error=error, **fields)
                queue.insert(0, trial)  # retry next
            else:
                self._set(trial, status="failed", error=error, **fields)
        self._save()
