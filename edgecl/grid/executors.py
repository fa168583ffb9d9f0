"""Executors for edgecl.grid.runner: Ray tasks (local instance or a cluster) and local threads.

Either way each trial is a `python -m edgecl train` subprocess; the executor only decides where
and how many at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from typing import Any, Callable

from edgecl.errors import EdgeclError
from edgecl.grid.runner import Outcome, run_train_subprocess


class LocalExecutor:
    """`workers` trials at once in threads of this process, each a subprocess. `run` is the
    function that runs one trial (tests pass an in-process fake)."""

    def __init__(self, workers: int, run: Callable[[list[str], str], Outcome] | None = None):
        self.capacity = max(1, workers)
        self._procs: set = set()
        self._run = run or (lambda args, run_dir: run_train_subprocess(
            args, run_dir, started=self._procs.add))
        self._pool = cf.ThreadPoolExecutor(max_workers=self.capacity,
                                           thread_name_prefix="edgecl-grid")

    def submit(self, trial, train_args: list[str], run_dir: str) -> cf.Future:
        return self._pool.submit(self._run, train_args, run_dir)

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
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _ray_trial(train_args: list[str], run_dir: str) -> Outcome:
    """Body of the Ray task: the worker's own Python runs the trial (same venv on a local
    instance; on a cluster every node needs edgecl installed)."""
    return run_train_subprocess(train_args, run_dir)


class RayExecutor:
    """One Ray task per trial (num_cpus=1, plus `gpus_per_trial` GPUs). Starts a local Ray
    instance with `workers` CPUs unless `address` names a running cluster."""

    def __init__(self, workers: int, address: str | None = None, gpus_per_trial: float = 0.0,
                 cpus_per_trial: float = 1.0):
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
        # At most `capacity` trials are submitted at once, so "running" means running; on a
        # cluster without --workers that is every CPU it has.
        cpus = ray.cluster_resources().get("CPU", 1)
        self.capacity = max(1, int(workers or cpus // cpus_per_trial))
        self._remote = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial,
                                  max_retries=0)(_ray_trial)

    def submit(self, trial, train_args: list[str], run_dir: str):
        return self._remote.options(name=f"edgecl-train:{trial.name}").remote(train_args, run_dir)

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
