"""`edgecl bench`: timing benchmarks. `memory-update` times every sampler on the same candidates."""

from __future__ import annotations

import json
import statistics
import time

import click

from edgecl import config as cfg

# (label, sampler name, uncertainty metric) of every memory update the benchmark times.
BENCH_SAMPLERS = (
    ("random", "random", None),
    ("reservoir", "reservoir", None),
    ("prototype", "prototype", None),
    ("uncertainty-shift", "uncertainty", "shift"),
    ("uncertainty-noise", "uncertainty", "noise"),
    ("uncertainty-noisytune", "uncertainty", "noisytune"),
)
REFERENCE = "uncertainty-noisytune"


@click.group("bench")
def bench() -> None:
    """Timing benchmarks (each prints a table, or JSON with --json)."""


def time_memory_updates(run, k: int, noise_lambda: float, repeats: int) -> list[dict]:
    """Train phases 0 and 1 of `run` (a replay run), then time every sampler's memory update on
    the memory after phase 0 plus phase 1's clips, with the same model. Each timing starts from a
    cold feature cache, so it includes the front end wherever the sampler needs features."""
    from edgecl.features import FeatureCache
    from edgecl.samplers import SamplerOptions, build_sampler

    tasks = run.plan.tasks
    run.records.append(run._run_phase(0, [tasks[0]]))
    _, new_clips, seen_tasks = run.train_phase(1, [tasks[1]])
    seen = [c for t in seen_tasks for c in t.classes]
    for lc in new_clips:  # read the audio once, outside the timings
        run.audio.waveform(lc.clip)
    rows = []
    for label, name, metric in BENCH_SAMPLERS:
        seconds = []
        for _ in range(repeats):
            sampler = build_sampler(name, SamplerOptions(metric or "noisytune", k, noise_lambda))
            memory = run.memory.copy()  # the same starting memory for every sampler
            started = time.perf_counter()
            original, run.memory = run.memory, memory
            try:
                candidates, new, context = run.selection_inputs(
                    1, new_clips, list(tasks[1].classes), seen,
                    FeatureCache(run.model.frontend, batch_size=64))
                chosen = sampler.select(candidates, memory.capacity, context)
                memory.update(chosen, [(c.key, c.target, c.load) for c in new])
            finally:
                run.memory = original
            seconds.append(time.perf_counter() - started)
        rows.append({"sampler": label, "k": k if metric else None,
                     "candidates": len(candidates), "seconds": statistics.median(seconds)})
    reference = next(r["seconds"] for r in rows if r["sampler"] == REFERENCE)
    for row in rows:
        row["ratio_to_noisytune"] = row["seconds"] / reference
    return rows


@bench.command("memory-update")
@click.option("--dataset", type=click.Choice(cfg.DATASETS), default="synthetic", show_default=True)
@click.option("--data-root", type=click.Path(), default=None)
@click.option("--model", type=click.Choice(cfg.MODELS), default="bc-resnet", show_default=True)
@click.option("--width", type=int, default=40, show_default=True)
@click.option("--metric-k", type=click.Choice(["2", "4", "6"]), default="6", show_default=True)
@click.option("--noise-lambda", type=float, default=0.2, show_default=True)
@click.option("--memory-size", type=int, default=500, show_default=True)
@click.option("--n-tasks", type=int, default=None)
@click.option("--n-init-cls", type=int, default=None)
@click.option("--n-cls-a-task", type=int, default=None)
@click.option("--epochs", type=int, default=3, show_default=True,
              help="Epochs per phase of the model trained first.")
@click.option("--sample-rate", type=int, default=None)
@click.option("--clip-seconds", type=float, default=None)
@click.option("--clips-per-class", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=3, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Timings per sampler (the median is reported).")
@click.option("--workspace", type=click.Path(file_okay=False), default="workspace",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--quiet", is_flag=True)
def memory_update(metric_k, repeats, as_json, **options) -> None:
    """Time every sampler's memory update on the same trained model and the same candidates.

    Trains a model on the first two tasks (memory filled at random after the first), then times
    random, reservoir, prototype and uncertainty with shift, noise and noisytune at the same k on
    the memory plus the second task's clips, and prints each time and its ratio to noisytune.
    """
    from edgecl.results import format_table
    from edgecl.trainer import ContinualRun

    config = cfg.RunConfig(mode="replay", mem_manage="random", metric_k=int(metric_k),
                           export=False, exp_name="bench-memory-update", patience=0, **options)
    rows = time_memory_updates(ContinualRun(config), int(metric_k), config.noise_lambda,
                               max(1, repeats))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(format_table(rows, ("sampler", "k", "candidates", "seconds",
                                       "ratio_to_noisytune")))


# `edgecl bench export RUN_DIR` lives with the exporter (firmware_export/bench.py).
from firmware_export.bench import bench_export_command  # noqa: E402

bench.add_command(bench_export_command)
