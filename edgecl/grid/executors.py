"""Executors for edgecl.grid.runner: Ray tasks (local instance or a cluster) and local threads.

Either way each trial is a `python -m edgecl train` subprocess; the executor only decides where
and how many at once, and which GPUs each trial sees (edgecl.grid.gpus).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from edgecl.errors import EdgeclError
from edgecl.grid.gpus import (
    gpu_capacity,
    gpu_slots,
    resolve_gpus_per_trial,
    trial_device,
    visible_devices,
)
from edgecl.grid.memory import local_memory_limit
from edgecl.grid.runner import Outcome, run_train_subprocess


class LocalExecutor:
    """`workers` trials at once in threads of this process, each a subprocess. `run(args,
    run_dir, env)` runs one trial with `env` added to its environment (tests pass an in-process
    fake).

    With `gpus_per_trial` > 0 (of this machine's `gpus`), each trial takes a slot of GPU ids
    (edgecl.grid.gpus.gpu_slots, round-robin over the GPUs) and sees only those; at most as many
    trials run as there are slots. Without, trials see no GPU."""

    def __init__(self, workers: int, run: Callable[[list[str], str, dict], Outcome] | None = None,
                 *, gpus: int = 0, gpus_per_trial: float = 0.0):
        resolve_gpus_per_trial(gpus_per_trial, gpus)  # more per trial than there are: an error
        self.device = trial_device(gpus_per_trial)
        slots = gpu_slots(gpus, gpus_per_trial)
        self.capacity = max(1, workers) if not slots else max(1, min(workers, len(slots)))
        self._free_slots = slots[:self.capacity]
        self._slots_lock = threading.Lock()
        self._procs: set = set()
        self._run = run or (lambda args, run_dir, env: run_train_subprocess(
            args, run_dir, started=self._procs.add, env=env))
        self._pool = cf.ThreadPoolExecutor(max_workers=self.capacity,
                                           thread_name_prefix="edgecl-grid")
        # The trials' estimated peaks share this (edgecl.grid.memory); None: not gated.
        self.memory_limit = local_memory_limit()

    def submit(self, trial, train_args: list[str], run_dir: str) -> cf.Future:
        with self._slots_lock:  # the runner submits only while fewer than capacity run
            slot = self._free_slots.pop(0) if self._free_slots else ()
        return self._pool.submit(self._run_in_slot, slot, train_args, run_dir)

    def _run_in_slot(self, slot: tuple[int, ...], train_args: list[str], run_dir: str) -> Outcome:
        try:
            return self._run(train_args, run_dir, visible_devices(slot))
        finally:
            if slot:
                with self._slots_lock:
                    self._free_slots.append(slot)

    def wait(self, handles: list[cf.Future], timeout: float) -> list[tuple[Any, Outcome]]:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return [(f, _result(f)) for f in done]

    def cancel(self, handles: list[cf.Future]) -> None:
        # Threads cannot be interrupted: terminate the trials' subprocesses, then let the
        # threads return.
        for f in handles:
            f.cancel()
        for proc in list(self._procs):
            if proc.poll() is None:
                proc.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _result(future: cf.Future) -> Outcome:
    try:
        return future.result()
    except Exception as error:  # the runner itself failed (e.g. python not found)
        return Outcome(returncode=-1, seconds=0.0, stderr_tail=f"{type(error).__name__}: {error}")


def _quiet_ray_environment() -> None:
    """Ray must start offline and quietly: no usage-stats upload, no prompts, no dashboard."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_PROMPT_ENABLED", "0")
    os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _ray_trial(train_args: list[str], run_dir: str) -> Outcome:
    """Body of the Ray task: the worker's own Python runs the trial (same venv on a local
    instance; on a cluster every node needs edgecl installed), seeing only the GPUs Ray
    reserved for it (none for a trial without GPUs, whatever Ray's default)."""
    import ray

    return run_train_subprocess(train_args, run_dir, env=visible_devices(ray.get_gpu_ids()))


class RayExecutor:
    """One Ray task per trial (`cpus_per_trial` CPUs, plus `gpus_per_trial` GPUs: by default
    one when the cluster has GPUs, edgecl.grid.gpus). Starts a local Ray instance with `workers`
    CPUs unless `address` names a running cluster."""

    def __init__(self, workers: int, address: str | None = None,
                 gpus_per_trial: float | None = None, cpus_per_trial: float = 1.0):
        _quiet_ray_environment()
        try:
            import ray
        except ImportError as error:  # pragma: no cover - ray is a dependency
            raise EdgeclError(f"edgecl grid needs Ray ({error}); pip install ray") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                          logging_level=logging.ERROR, configure_logging=True)
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:  # RAY_ADDRESS would make ray.init join a cluster instead
                    os.environ.pop("RAY_ADDRESS", None)
                    ray.init(num_cpus=workers, **kwargs)
            except Exception as error:
                raise EdgeclError(f"could not {'connect to Ray at ' + address if address else 'start a local Ray instance'}: "
                                  f"{type(error).__name__}: {error}") from None
            self._started = True
        # At most `capacity` trials are submitted at once, so "running" means running (and the
        # ETA counts right): on a cluster without --workers, as many as its CPUs hold, and no
        # more than its GPUs hold when trials take GPUs.
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        self.gpus_per_trial = resolve_gpus_per_trial(gpus_per_trial, gpus)
        self.device = trial_device(self.gpus_per_trial)
        self.capacity = max(1, int(workers or resources.get("CPU", 1) // cpus_per_trial))
        on_gpus = gpu_capacity(gpus, self.gpus_per_trial)
        if on_gpus is not None:
            self.capacity = min(self.capacity, on_gpus)
        self._remote = ray.remote(num_cpus=cpus_per_trial, num_gpus=self.gpus_per_trial,
                                  max_retries=0)(_ray_trial)
        # The trials' estimated peaks share Ray's memory resource, and each task reserves its
        # own, so Ray places it on a node with room (edgecl.grid.memory). Set by the grid.
        self.memory_limit = int(resources["memory"]) if resources.get("memory") else None
        self.memory = None

    def submit(self, trial, train_args: list[str], run_dir: str):
        options: dict[str, Any] = {"name": f"edgecl-train:{trial.name}"}
        if self.memory is not None:
            options["memory"] = self.memory.estimate(trial)
        return self._remote.options(**options).remote(train_args, run_dir)

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Outcome]]:
        if not handles:
            return []
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as error:  # worker died, task error: recorded like a failed trial
                message = str(error).strip().splitlines()
                out.append((ref, Outcome(-1, 0.0, "\n".join(
                    [f"ray: {type(error).__name__}"] + message[-10:]))))
        return out

    def cancel(self, handles: list[Any]) -> None:
        # A graceful cancel raises KeyboardInterrupt in the task, which terminates its subprocess.
        for ref in handles:
            try:
                self._ray.cancel(ref, force=False)
            except Exception:
                pass
        if handles:
            try:
                self._ray.wait(handles, num_returns=len(handles), timeout=15)
            except Exception:
                pass

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
