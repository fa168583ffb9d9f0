"""`edgecl grid`: run a grid of `edgecl train` configurations (a TOML spec) as Ray tasks."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

import click

from edgecl.errors import EdgeclError
from edgecl.limits import INT_RANGES, option_range


def _int_list(value: str | None, option: str) -> list[int] | None:
    if value is None:
        return None
    try:
        items = [int(v) for v in value.replace(",", " ").split()]
    except ValueError:
        raise EdgeclError(f"{option}: expected integers separated by commas or spaces, "
                          f"got {value!r}") from None
    if not items:
        raise EdgeclError(f"{option}: expected at least one integer")
    return items


def _interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt in the driver, whatever handlers Ray installed
    or the parent shell left (a background job starts with SIGINT ignored)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


@click.command("grid", context_settings={"ignore_unknown_options": False})
@click.argument("spec")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--data-root", type=click.Path(), default=None,
              help="Dataset folder or manifest CSV, given to every trial (made absolute).")
@click.option("--workspace", type=click.Path(file_okay=False), default="workspace",
              show_default=True, help="Runs go to WORKSPACE/<trial>/; state to WORKSPACE/grid.json.")
@click.option("--address", default=None,
              help="Connect to this running Ray cluster (e.g. auto, or HOST:6379) instead of "
                   "starting a local Ray instance.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              callback=option_range(1, 100_000),
              help="Trials at once [local: CPU count; cluster: its CPUs].")
@click.option("--executor", type=click.Choice(["ray", "local"]), default="ray", show_default=True,
              help="ray: Ray tasks; local: threads of this process (no Ray).")
@click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
              callback=option_range(0, 1000),
              help="Extra attempts for a failed trial before it is recorded as failed.")
@click.option("--seeds", default=None, help="Override the spec's seeds, e.g. '1,2'.")
@click.option("--folds", default=None, help="Override the spec's test folds, e.g. '1'.")
@click.option("--memory-sizes", default=None, help="Override the spec's memory sizes, e.g. '500'.")
@click.option("--methods", default=None,
              help="Run only these methods: labels or shell patterns, comma-separated, e.g. "
                   "'pgb-kd-bicd-*,joint' (--dry-run lists the labels).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              callback=option_range(*INT_RANGES["threads"]),
              help="torch threads per trial (each trial takes that many CPUs from Ray).")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=None,
              callback=lambda ctx, param, value: None if value is None
              else option_range(0.0, 1024.0, integer=False)(ctx, param, value),
              help="GPUs per trial, e.g. 0.5 for two trials on each GPU, 0 to train on CPUs "
                   "only; each trial sees only its own GPUs (CUDA_VISIBLE_DEVICES) and is run "
                   "with --device cuda (or cpu at 0). [default: 1 where there are GPUs, else 0]")
@click.option("--dry-run", is_flag=True, help="List the trials and their commands; run nothing.")
def grid_command(spec: str, train_args: tuple[str, ...], data_root: str | None, workspace: str,
                 address: str | None, workers: int | None, executor: str, retries: int,
                 seeds: str | None, folds: str | None, memory_sizes: str | None,
                 methods: str | None, threads: int, gpus_per_trial: float | None,
                 dry_run: bool) -> None:
    """Run every configuration of SPEC (a TOML file, or a built-in: tau-asc, esc-50, fsdd,
    fsdd-m50).

    Each trial is `python -m edgecl train ... --threads 1 --quiet` in its own process, in a Ray
    task. TRAIN_ARGS after `--` go to every trial (e.g. -- --epochs 5 --no-export). Complete runs
    are skipped; a failed trial is retried --retries times, then recorded as failed with the end of
    its stderr in WORKSPACE/grid.json. Exit code 1 when a trial failed, 130 on Ctrl-C.
    """
    from edgecl.grid.runner import run_is_complete

    grid, trials = _selected_trials(spec, train_args, data_root, seeds, folds, memory_sizes,
                                    methods)
    ws = Path(workspace).absolute()
    if dry_run:
        _list_trials(grid, trials, ws, threads)
        return
    if not any(not run_is_complete(ws / t.name) for t in trials):  # no need to start Ray
        executor = "local"
    runner_executor = _executor(executor, workers, address, gpus_per_trial, threads)
    memory = _trial_memory(runner_executor, trials)
    click.echo(f"grid {grid.name}: {len(trials)} trials, "
               f"{memory.parallelism(trials, runner_executor.capacity)} at once "
               f"({executor}{' at ' + address if address else ''}, --device "
               f"{runner_executor.device}), workspace {ws}", err=True)
    state = _run_trials(grid, trials, ws, runner_executor, retries, threads, memory)
    _report_outcome(grid, state, ws)


def _selected_trials(spec: str, train_args: tuple[str, ...], data_root: str | None,
                     seeds: str | None, folds: str | None, memory_sizes: str | None,
                     methods: str | None):
    """The spec and its trials after the command line's overrides and --methods filter."""
    from edgecl.grid.spec import load_spec, parse_train_args, select_methods

    grid = load_spec(spec)
    grid.seeds = _int_list(seeds, "--seeds") or grid.seeds
    if folds is not None:
        grid.folds = _int_list(folds, "--folds")
    if memory_sizes is not None:
        grid.memory_sizes = _int_list(memory_sizes, "--memory-sizes")
    overrides = parse_train_args(train_args)
    if data_root is not None:
        if not Path(data_root).exists():
            raise EdgeclError(f"--data-root: {data_root} does not exist")
        overrides["data_root"] = str(Path(data_root).absolute())
    trials = grid.trials(overrides)
    if methods is not None:
        patterns = [p for p in methods.replace(" ", ",").split(",") if p]
        if not patterns:
            raise EdgeclError("--methods: expected method labels or patterns, comma-separated")
        trials = select_methods(trials, patterns)
    needs_root = {t.options.get("dataset", "synthetic") for t in trials} - {"synthetic"}
    if needs_root and not any(t.options.get("data_root") for t in trials):
        raise EdgeclError(f"--data-root: required for --dataset {', '.join(sorted(needs_root))}")
    return grid, trials


def _list_trials(grid, trials, ws: Path, threads: int) -> None:
    """--dry-run: each trial, whether it runs or is skipped, its estimated peak memory and its
    command; then how many run at once on this machine (cores and memory)."""
    from edgecl.grid.memory import TrialMemory, gib, local_memory_limit
    from edgecl.grid.runner import run_is_complete

    memory = TrialMemory(local_memory_limit())
    skip = 0
    for trial in trials:
        complete = run_is_complete(ws / trial.name)
        skip += complete
        click.echo(f"{'skip' if complete else 'run '}  {trial.name}  (estimated peak "
                   f"{gib(memory.estimate(trial))})")
        click.echo(f"      edgecl train {shlex.join(trial.train_args(ws, threads))}")
    at_once = memory.parallelism(trials, os.cpu_count() or 1)
    click.echo(f"{len(trials)} trials in grid {grid.name}: {len(trials) - skip} to run, "
               f"{skip} complete (skipped); {at_once} at once on this machine's "
               f"{os.cpu_count() or 1} cores and "
               f"{'unknown memory' if memory.limit is None else gib(memory.limit)} (local)")


def _executor(executor: str, workers: int | None, address: str | None,
              gpus_per_trial: float | None, threads: int):
    from edgecl.grid.executors import LocalExecutor, RayExecutor
    from edgecl.grid.gpus import local_gpu_count, resolve_gpus_per_trial

    if executor == "ray":
        return RayExecutor(workers or (None if address else os.cpu_count() or 1),
                           address=address, gpus_per_trial=gpus_per_trial, cpus_per_trial=threads)
    gpus = local_gpu_count()
    return LocalExecutor(workers or os.cpu_count() or 1, gpus=gpus,
                         gpus_per_trial=resolve_gpus_per_trial(gpus_per_trial, gpus))


def _trial_memory(runner_executor, trials):
    """The gate that starts trials only while their estimated peaks fit the executor's memory;
    a trial that could never fit is an error before any starts."""
    from edgecl.grid.memory import TrialMemory

    memory = TrialMemory(runner_executor.memory_limit)
    memory.check_each_fits(trials)
    runner_executor.memory = memory  # Ray reserves each task's estimate
    return memory


def _run_trials(grid, trials, ws: Path, runner_executor, retries: int, threads: int,
                memory=None) -> dict:
    """Run the trials to the end (exit 130 on Ctrl-C or SIGTERM); the grid's final state."""
    from edgecl.grid.progress import Progress
    from edgecl.grid.runner import GridRunner

    progress = Progress()
    runner = GridRunner(trials, ws, runner_executor, spec_name=grid.name, retries=retries,
                        threads=threads, progress=progress, memory=memory)
    _interrupt_on_signals()
    try:
        state = runner.run()
    except KeyboardInterrupt:
        progress.close()
        runner_executor.close()
        click.echo(f"grid: interrupted; running trials cancelled; state in {ws / 'grid.json'}",
                   err=True)
        sys.exit(130)
    progress.close()
    runner_executor.close()
    return state


def _report_outcome(grid, state: dict, ws: Path) -> None:
    """The counts, and each failed trial's last error line (exit 1 when one failed)."""
    counts = state["counts"]
    click.echo(f"grid {grid.name}: {counts['done']} done, {counts['skipped']} skipped, "
               f"{counts['failed']} failed of {counts['total']}; state in {ws / 'grid.json'}")
    failed = [(n, e) for n, e in state["trials"].items() if e["status"] == "failed"]
    for name, entry in failed:
        last = (entry.get("error") or "").strip().splitlines()[-1:] or ["?"]
        click.echo(f"  failed: {name}: {last[0]}", err=True)
    if failed:
        sys.exit(1)
