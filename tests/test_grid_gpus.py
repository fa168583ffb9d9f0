"""The grid on GPU machines, without GPUs: the local executor hands each trial its own GPU ids
(round-robin, shared at a fraction per trial), Ray is asked for GPUs and its capacity counts
them (Ray mocked), trials without GPUs see none, and every trial is given its --device."""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path

import pytest
from test_grid import _tiny

from edgecl.errors import EdgeclError
from edgecl.grid import executors
from edgecl.grid.executors import LocalExecutor, RayExecutor
from edgecl.grid.gpus import gpu_capacity, gpu_slots, resolve_gpus_per_trial
from edgecl.grid.runner import GridRunner, Outcome
from edgecl.grid.spec import load_spec


def test_slots_go_round_robin_over_the_gpus():
    assert gpu_slots(2, 1) == [(0,), (1,)]
    assert gpu_slots(2, 0.5) == [(0,), (1,), (0,), (1,)]
    assert gpu_slots(4, 2) == [(0, 1), (2, 3)]
    assert gpu_slots(2, 0) == [] and gpu_capacity(2, 0) is None
    assert gpu_capacity(3, 0.5) == 6 and gpu_capacity(1, 1) == 1


def test_a_trial_gets_a_gpu_by_default_only_where_there_is_one():
    assert resolve_gpus_per_trial(None, 2) == 1.0
    assert resolve_gpus_per_trial(None, 0) == 0.0
    assert resolve_gpus_per_trial(0, 2) == 0.0
    with pytest.raises(EdgeclError, match="--gpus-per-trial: 1 GPU.*no GPU is available"):
        resolve_gpus_per_trial(1, 0)
    with pytest.raises(EdgeclError, match="--gpus-per-trial: 3 GPU.*only 2 are available"):
        resolve_gpus_per_trial(3, 2)


def _recording_train(seen: list, running: list, lock: threading.Lock):
    """A trial that records its --device and CUDA_VISIBLE_DEVICES and which ones ran at once."""
    def run(args, run_dir, env):
        device = args[args.index("--device") + 1]
        with lock:
            running.append(env["CUDA_VISIBLE_DEVICES"])
            seen.append((device, env["CUDA_VISIBLE_DEVICES"], list(running)))
        time.sleep(0.05)
        with lock:
            running.remove(env["CUDA_VISIBLE_DEVICES"])
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "results.json").write_text('{"complete": true}')
        return Outcome(0, 0.05, "", complete=True)
    return run


@pytest.mark.parametrize("per_trial, capacity, per_gpu", [(1, 2, 1), (0.5, 4, 2)])
def test_local_trials_each_see_their_own_gpus(tmp_path, per_trial, capacity, per_gpu):
    trials = load_spec(_tiny(tmp_path)).trials()
    seen, running, lock = [], [], threading.Lock()
    executor = LocalExecutor(8, _recording_train(seen, running, lock), gpus=2,
                             gpus_per_trial=per_trial)
    assert executor.capacity == capacity and executor.device == "cuda"
    state = GridRunner(trials, tmp_path / "ws", executor).run()
    assert state["counts"]["done"] == len(trials) == len(seen)
    assert {device for device, _, _ in seen} == {"cuda"}
    assert {gpu for _, gpu, _ in seen} == {"0", "1"}
    for _, _, at_once in seen:  # never more trials on a GPU than its share
        assert all(at_once.count(gpu) <= per_gpu for gpu in ("0", "1"))
    assert max(len(at_once) for _, _, at_once in seen) > 1


def test_cpu_trials_on_a_gpu_machine_see_no_gpu(tmp_path):
    trials = load_spec(_tiny(tmp_path)).trials()
    seen, running, lock = [], [], threading.Lock()
    executor = LocalExecutor(3, _recording_train(seen, running, lock), gpus=2, gpus_per_trial=0)
    assert executor.capacity == 3 and executor.device == "cpu"
    GridRunner(trials, tmp_path / "ws", executor).run()
    assert {(device, gpu) for device, gpu, _ in seen} == {("cpu", "")}


class _FakeRay(types.ModuleType):
    """The parts of Ray the executor uses, over a cluster of `resources`."""

    def __init__(self, resources: dict, gpu_ids=()):
        super().__init__("ray")
        self.resources, self.gpu_ids, self.remote_options = resources, list(gpu_ids), None

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return dict(self.resources)

    def get_gpu_ids(self):
        return self.gpu_ids

    def remote(self, **options):
        self.remote_options = options
        return lambda function: function


@pytest.mark.parametrize("resources, requested, capacity, gpus, device", [
    ({"CPU": 16, "GPU": 2}, None, 2, 1.0, "cuda"),   # a GPU each by default: GPUs bound it
    ({"CPU": 16, "GPU": 2}, 0.5, 4, 0.5, "cuda"),
    ({"CPU": 16, "GPU": 2}, 0, 16, 0.0, "cpu"),      # CPU-only trials: no GPU reserved
    ({"CPU": 4}, None, 4, 0.0, "cpu"),               # no GPU in the cluster
])
def test_ray_reserves_gpus_and_counts_them(monkeypatch, resources, requested, capacity, gpus,
                                           device):
    ray = _FakeRay(resources)
    monkeypatch.setitem(sys.modules, "ray", ray)
    executor = RayExecutor(None, address="auto", gpus_per_trial=requested)
    assert executor.capacity == capacity and executor.device == device
    assert ray.remote_options["num_gpus"] == gpus and ray.remote_options["num_cpus"] == 1.0


def test_ray_refuses_more_gpus_than_the_cluster_has(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", _FakeRay({"CPU": 8}))
    with pytest.raises(EdgeclError, match="--gpus-per-trial"):
        RayExecutor(None, address="auto", gpus_per_trial=1)


@pytest.mark.parametrize("gpu_ids, visible", [([1], "1"), ([], "")])
def test_a_ray_trial_sees_only_the_gpus_ray_gave_it(monkeypatch, gpu_ids, visible):
    monkeypatch.setitem(sys.modules, "ray", _FakeRay({"CPU": 2}, gpu_ids))
    calls = []
    monkeypatch.setattr(executors, "run_train_subprocess",
                        lambda args, run_dir, env: calls.append(env) or Outcome(0, 0.0))
    executors._ray_trial(["--device", "cuda"], "run")
    assert calls == [{"CUDA_VISIBLE_DEVICES": visible}]


def test_the_eta_counts_trials_the_gpus_hold(tmp_path):
    trials = load_spec(_tiny(tmp_path)).trials()
    runner = GridRunner(trials, tmp_path / "ws", LocalExecutor(16, gpus=1, gpus_per_trial=1))
    runner.state["trials"] = {t.name: {"status": "pending"} for t in trials}
    runner._durations = [10.0]
    assert runner.eta_seconds() == 10.0 * len(trials)  # one GPU: one trial at a time
