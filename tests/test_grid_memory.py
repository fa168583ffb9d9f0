"""The grid schedules trials by memory: each trial's estimated peak RSS is reserved while it runs,
so no more trials start than the grid's memory holds (trials faked, Ray mocked)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from test_grid import _tiny
from test_grid_gpus import _FakeRay

from edgecl.errors import EdgeclError
from edgecl.grid import memory as grid_memory
from edgecl.grid.executors import LocalExecutor, RayExecutor
from edgecl.grid.memory import TrialMemory, trial_shape
from edgecl.grid.runner import GridRunner, Outcome
from edgecl.grid.spec import load_spec

GIB = 2**30


def _concurrency_recorder(running: list, most: list, lock: threading.Condition,
                          expected: int, n_trials: int):
    """A fake trial that records how many run at once. Each waits (a bounded time) until
    `expected` trials run together or every trial has started, so a loaded machine that starts
    threads slowly cannot make the overlap look smaller than the scheduler allows."""
    started = []

    def run(args, run_dir, env):
        with lock:
            running.append(run_dir)
            started.append(run_dir)
            most.append(len(running))
            lock.notify_all()
            lock.wait_for(lambda: len(running) >= expected or len(started) == n_trials,
                          timeout=10)
        time.sleep(0.01)
        with lock:
            running.remove(run_dir)
            lock.notify_all()
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "results.json").write_text('{"complete": true}')
        return Outcome(0, 0.05, "", complete=True)
    return run


@pytest.fixture
def three_gib_trials(monkeypatch):
    """Every trial is estimated at 3 GiB, without building a model."""
    monkeypatch.setattr(grid_memory, "shape_estimate", lambda shape: 3 * GIB)


@pytest.mark.parametrize("limit_gib, at_once", [(7, 2), (3, 1), (100, 4)])
def test_trials_at_once_are_bounded_by_memory(tmp_path, three_gib_trials, limit_gib, at_once):
    trials = load_spec(_tiny(tmp_path)).trials()
    assert len(trials) >= 4
    running, most, lock = [], [], threading.Condition()
    memory = TrialMemory(limit_gib * GIB)
    runner = GridRunner(trials, tmp_path / "ws", LocalExecutor(4, _concurrency_recorder(
        running, most, lock, at_once, len(trials))), memory=memory)
    state = runner.run()
    assert state["counts"]["done"] == len(trials)
    assert max(most) == at_once  # cores allow 4; memory allows at_once
    assert memory.in_use == 0
    assert memory.parallelism(trials, 4) == at_once


def test_a_trial_larger_than_the_grid_memory_is_refused_before_any_starts(tmp_path,
                                                                         three_gib_trials):
    trials = load_spec(_tiny(tmp_path)).trials()
    with pytest.raises(EdgeclError, match=r"estimated peak 3\.00 GiB exceeds the grid's memory"):
        TrialMemory(2 * GIB).check_each_fits(trials)
    TrialMemory(None).check_each_fits(trials)  # no limit: nothing to check


def test_ray_tasks_reserve_their_estimate(monkeypatch, tmp_path, three_gib_trials):
    ray = _FakeRay({"CPU": 8, "memory": 10 * GIB})
    submitted = []
    ray.remote = lambda **options: (lambda function: _Remote(submitted))
    monkeypatch.setitem(sys.modules, "ray", ray)
    executor = RayExecutor(None, address="auto", gpus_per_trial=0)
    assert executor.memory_limit == 10 * GIB
    executor.memory = TrialMemory(executor.memory_limit)
    trial = load_spec(_tiny(tmp_path)).trials()[0]
    executor.submit(trial, [], str(tmp_path))
    assert submitted == [{"name": f"edgecl-train:{trial.name}", "memory": 3 * GIB}]


class _Remote:
    def __init__(self, submitted):
        self.submitted = submitted

    def options(self, **options):
        self.submitted.append(options)
        return self

    def remote(self, *args):
        return object()


def test_trial_shape_reads_options_and_dataset_defaults():
    shape = trial_shape({"dataset": "synthetic", "batch_size": 8, "width": 20})
    assert (shape.sample_rate, shape.clip_seconds, shape.batch_size, shape.width) == \
        (16000, 1.0, 8, 20)
    assert shape.n_clips == 1000 and not shape.checkpointing
    on = trial_shape({"dataset": "synthetic", "activation_checkpointing": "on",
                      "sample_rate": 8000})
    assert on.checkpointing and on.sample_rate == 8000


def test_estimate_grows_with_the_clip_and_shrinks_with_checkpointing():
    small = grid_memory.shape_estimate(trial_shape({"dataset": "synthetic", "width": 8}))
    long = grid_memory.shape_estimate(trial_shape({"dataset": "synthetic", "width": 8,
                                                   "clip_seconds": 4.0}))
    checkpointed = grid_memory.shape_estimate(trial_shape({
        "dataset": "synthetic", "width": 8, "clip_seconds": 4.0,
        "activation_checkpointing": "on"}))
    assert small < checkpointed < long
