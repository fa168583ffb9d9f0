"""`edgecl bench`: timing benchmarks. `memory-update` times every sampler on the same candidates."""

from __future__ import annotations

import statistics
import time

import click

from edgecl.commands import options as registry_options
from edgecl.device import DEVICES
from edgecl.fileio import json_text
from edgecl.limits import option_range

REFERENCE = "uncertainty-noisytune"  # the ratio column divides by this row's time


@click.group("bench")
def bench() -> None:
    """Timing benchmarks (each prints a table, or JSON with --json)."""


def _memory_update_run_options() -> list:
    """The run options `bench memory-update` takes: every sampler option but --uncert-metric
    (it times each metric itself)."""
    from edgecl.samplers import sampler_options

    samplers = [name for name in sampler_options() if name != "uncert_metric"]
    return [registry_options.run_option(name) for name in (
        "dataset", "data_root", "model", "width", *samplers, "memory_size", "n_tasks",
        "n_init_cls", "n_cls_a_task", "epochs", "sample_rate", "clip_seconds",
        "clips_per_class", "seed", "threads", "device")]


def bench_variants() -> list[tuple[str, str, dict]]:
    """(label, sampler name, options) of every memory update the benchmark times: each registered
    sampler's variants (edgecl.samplers.base.Sampler.variants)."""
    from edgecl.samplers import sampler_class, sampler_names

    return [(label, name, options) for name in sampler_names()
            for label, options in sampler_class(name).variants()]


def time_memory_updates(run, sampler_values: dict, repeats: int, warm: bool = False,
                        only: tuple[str, ...] = ()) -> list[dict]:
    """Train phases 0 and 1 of `run` (a replay run), then time every sampler's memory update on
    the memory after phase 0 plus phase 1's clips, with the same model, and one plain embedding
    pass over the same candidates (the yardstick of `ratio_to_embedding`), plus one through the
    model's own backbone in batches of 64 (`reference_embedding_seconds`, the path before
    models.inference).

    Each timing starts from a copy of that memory and either a cold feature cache (the front end
    runs wherever the sampler needs features) or, with `warm`, a copy of the run's cache after
    training (the memory's and the new clips' log-mels cached, as in a run). The embedding pass
    starts from the same kind of cache. `only`: the labels to time (default: every variant)."""
    from edgecl.memory_update import embedding_pass_seconds, fresh_items, update_memory, warm_items
    from edgecl.samplers import build_sampler

    tasks = run.plan.tasks
    run.records.append(run.run_phase(0, [tasks[0]]))
    trained = run.train_phase(1, [tasks[1]])
    for lc in trained.new_clips:  # read the audio once, outside the timings
        run.audio.waveform(lc.clip)
    items_for = warm_items if warm else fresh_items
    def embedding(reference: bool) -> float:
        return statistics.median(
            embedding_pass_seconds(run.memory, items_for(run.items), trained.new_clips,
                                   model=run.model, sample_rate=run.split.sample_rate,
                                   reference=reference)[0] for _ in range(repeats))

    reference_embedding, embedding = embedding(True), embedding(False)
    rows = []
    for label, name, variant in bench_variants():
        if only and label not in only:
            continue
        seconds = []
        for _ in range(repeats):
            sampler = build_sampler(name, {**sampler_values, **variant})
            memory = run.memory.copy()  # the same starting memory for every sampler
            update = update_memory(
                memory, sampler, items_for(run.items), trained.new_clips, phase=1, rng=run.rng,
                model=run.model, model_macs=trained.macs, sample_rate=run.split.sample_rate,
                clip_samples=run.split.clip_samples, exemplar_shape=run.exemplar_shape(memory.format))
            seconds.append(update.seconds)
        uses_k = any(o.name == "metric_k" for o in sampler.options)
        median = statistics.median(seconds)
        rows.append({"sampler": label, "device": str(run.device),
                     "k": sampler_values.get("metric_k") if uses_k else None,
                     "cache": "warm" if warm else "cold", "candidates": update.n_candidates,
                     "seconds": median, "ms_per_candidate": 1000 * median / update.n_candidates,
                     "embedding_seconds": embedding,
                     "reference_embedding_seconds": reference_embedding})
    reference = next((r["seconds"] for r in rows if r["sampler"] == REFERENCE), None)
    for row in rows:
        row["ratio_to_noisytune"] = row["seconds"] / reference if reference else None
        row["ratio_to_embedding"] = row["seconds"] / embedding if embedding > 0 else None
    return rows


@bench.command("memory-update")
@registry_options.add_options(_memory_update_run_options(), epochs=dict(
    default=3, help="Epochs per phase of the model trained first."), device=dict(
    default="cpu", help="Where the model trains and the memory update runs (timings on a GPU "
                        "wait for its kernels to finish)."))
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Timings per sampler, 1 to 10000 (the median is reported).")
@registry_options.add_options([registry_options.run_option("workspace")])
@click.option("--only", multiple=True,
              help="Time only this sampler label (e.g. uncertainty-noisytune); repeatable.")
@click.option("--warm", is_flag=True,
              help="Start each update with the log-mels cached, as inside a run after training "
                   "(default: a cold cache, the front end included in the timing).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@registry_options.add_options([registry_options.run_option("quiet")])
def memory_update(repeats, only, warm, as_json, **options) -> None:
    """Time every sampler's memory update on the same trained model and the same candidates.

    Trains a model on the first two tasks (memory filled at random after the first), then times
    every registered sampler (uncertainty with each of shift, noise and noisytune) with the same
    options on the memory plus the second task's clips, and prints each time and its ratio to
    uncertainty-noisytune and to one plain embedding pass over the same candidates (timed in
    the same run, from the same cache state).
    """
    from edgecl.config import RunConfig
    from edgecl.errors import EdgeclError
    from edgecl.limits import INT_RANGES, check_int
    from edgecl.results import format_table
    from edgecl.samplers import sampler_options
    from edgecl.trainer import ContinualRun

    config = RunConfig(mode="replay", mem_manage="random", export=False,
                       exp_name="bench-memory-update", patience=0, **options)
    check_int("--repeats", repeats, *INT_RANGES["repeats"])
    if options.get("n_tasks") is not None and options["n_tasks"] < 2:
        raise EdgeclError(f"--n-tasks: bench memory-update trains two phases and times the second "
                          f"one's memory update; needs at least 2 tasks, got {options['n_tasks']}")
    values = {name: options[name] for name in sampler_options() if name in options}
    labels = [label for label, _, _ in bench_variants()]
    unknown = [label for label in only if label not in labels]
    if unknown:
        raise EdgeclError(f"--only: expected sampler labels from {', '.join(labels)}, got "
                          f"{', '.join(unknown)}")
    run = ContinualRun(config)
    if len(run.plan.tasks) < 2:
        raise EdgeclError(f"--n-tasks: bench memory-update trains two phases and times the second "
                          f"one's memory update; needs at least 2 tasks, got {len(run.plan.tasks)}")
    rows = time_memory_updates(run, {**config.sampler_options, **values}, repeats, warm=warm,
                               only=tuple(only))
    if as_json:
        click.echo(json_text(rows))
        return
    first = rows[0]
    per_candidate = 1000 / first["candidates"]
    click.echo(f"on {first['device']}, {config.threads} thread(s), {first['cache']} feature cache, "
               f"{first['candidates']} candidates; one embedding "
               f"pass: {per_candidate * first['embedding_seconds']:.2f} ms per candidate "
               f"(the model's own backbone, batches of 64: "
               f"{per_candidate * first['reference_embedding_seconds']:.2f})")
    click.echo(format_table(rows, ("sampler", "k", "candidates", "seconds", "ms_per_candidate",
                                   "ratio_to_noisytune", "ratio_to_embedding")))


def import_optimizer_modules() -> None:
    """Take one Adam step on a throwaway parameter: a process's first optimizer step imports
    torch's compiler stack (about 900 modules, a CPU second or more), which would otherwise be
    charged to the epochs of the first row timed (the first precision of the first round)."""
    import torch

    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.Adam([weight])
    weight.sum().backward()
    optimizer.step()


def time_training_epoch(config) -> dict:
    """One row of `bench train`: a finetune run of `config` trains its first task for
    `config.epochs` epochs on log-mels cached beforehand; the median epoch time (training steps,
    BatchNorm recalibration and validation, as `fit` times them), the MACs per second of audio
    of the front end and of the backbone (the DCASE complexity limit counts the backbone alone),
    the process's peak RSS while the epochs ran (edgecl.budget.ram.PeakRss: the feature cache
    and whatever the process held before are in it) and the run's own estimate of that peak
    (edgecl.budget.host_ram, made before training; `estimated_activation_bytes` is its part that
    checkpointing changes)."""
    from edgecl.allocator import release_freed_memory
    from edgecl.budget.ram import PeakRss
    from edgecl.trainer import ContinualRun

    release_freed_memory()  # earlier rows' freed memory out of this row's RSS and estimate
    import_optimizer_modules()
    run = ContinualRun(config)
    task = run.plan.tasks[0]
    run.items.features.get([run.items.clip(lc.clip) for lc in task.train + task.val])
    fit_cpu_seconds = []  # CPU time of the epochs alone: what a shared machine inflates least
    fit_peaks = []
    real_fit = run._fit

    def timed_fit(*args, **kwargs):
        started = time.process_time()
        with PeakRss() as peak:
            report = real_fit(*args, **kwargs)
        fit_cpu_seconds.append(time.process_time() - started)
        fit_peaks.append(peak.bytes)
        return report

    run._fit = timed_fit
    trained = run.train_phase(0, [task])
    cpu_seconds = fit_cpu_seconds[0] / trained.record.details["epochs_run"]
    seconds = statistics.median(trained.record.details["epoch_seconds"])
    audio_seconds = run.split.clip_samples / run.split.sample_rate
    return {"model": config.model, "device": str(run.device), "sample_rate": run.split.sample_rate,
            "precision": run.precision.name,
            "checkpointing": _checkpointing_name(run.host_ram),
            "clip_seconds": audio_seconds, "train_clips": len(task.train),
            "val_clips": len(task.val), "epochs": len(trained.record.details["epoch_seconds"]),
            "epoch_seconds": seconds, "ms_per_train_clip": 1000 * seconds / len(task.train),
            "epoch_cpu_seconds": cpu_seconds,
            "peak_rss_bytes": fit_peaks[0], "estimate_bytes": run.host_ram.total,
            "estimated_activation_bytes": run.host_ram.activations,
            "frontend_mmacs_per_second": trained.macs.frontend / audio_seconds / 1e6,
            "backbone_mmacs_per_second": trained.macs.backbone / audio_seconds / 1e6}


def time_precisions(config, precisions: list[str], rounds: int,
                    checkpointings: tuple[str, ...] = ("off",)) -> list[dict]:
    """Rows of `bench train` for one model and rate, one per precision and checkpointing (off,
    on or lean, `--activation-checkpointing`): `rounds` rounds, each timing every combination in
    turn (interleaved, so a busy machine slows them alike); each row holds the median over rounds
    and `speedup`, the first precision's epoch time over its own at the same checkpointing
    (`cpu_speedup`: the same in CPU seconds, which other jobs on a shared machine inflate less),
    and with more than one checkpointing setting, `checkpointing_time_ratio`: the row's epoch
    time over the same precision's at the first setting listed (off in off,on)."""
    from dataclasses import replace

    variants = [(p, c) for p in precisions for c in checkpointings]
    timed: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
    for _ in range(rounds):
        for precision, checkpointing in variants:
            name = (config.exp_name + ("" if precision == "fp32" else f"-{precision}")
                    + {"off": "", "on": "-checkpointing", "lean": "-lean"}[checkpointing])
            timed[precision, checkpointing].append(time_training_epoch(
                replace(config, precision=precision, activation_checkpointing=checkpointing,
                        exp_name=name)))
    rows = {}
    for variant in variants:
        row = dict(timed[variant][0])
        for key in ("epoch_seconds", "epoch_cpu_seconds"):
            row[key] = statistics.median(r[key] for r in timed[variant])
        row["peak_rss_bytes"] = statistics.median_high(r["peak_rss_bytes"]
                                                       for r in timed[variant])
        row["ms_per_train_clip"] = 1000 * row["epoch_seconds"] / row["train_clips"]
        rows[variant] = row
    for (precision, checkpointing), row in rows.items():
        first = rows[precisions[0], checkpointing]
        row["speedup"] = first["epoch_seconds"] / row["epoch_seconds"]
        row["cpu_speedup"] = first["epoch_cpu_seconds"] / row["epoch_cpu_seconds"]
        if len(checkpointings) > 1:
            plain = rows[precision, checkpointings[0]]
            row["checkpointing_time_ratio"] = row["epoch_seconds"] / plain["epoch_seconds"]
    return list(rows.values())


def _precision_list(_ctx, param, value: str) -> list[str]:
    from edgecl.errors import EdgeclError
    from edgecl.precision import PRECISIONS

    names = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names or any(name not in PRECISIONS for name in names):
        raise EdgeclError(f"{param.opts[0]}: expected comma-separated precisions from "
                          f"{', '.join(PRECISIONS)}, got {value!r}")
    return names


# The --activation-checkpointing settings a bench row can force (auto picks one of them).
BENCH_CHECKPOINTING = ("off", "on", "lean")


def _checkpointing_list(_ctx, param, value: str) -> tuple[str, ...]:
    from edgecl.errors import EdgeclError

    modes = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not modes or any(mode not in BENCH_CHECKPOINTING for mode in modes):
        raise EdgeclError(f"{param.opts[0]}: expected comma-separated values from "
                          f"{', '.join(BENCH_CHECKPOINTING)}, got {value!r}")
    return modes


def _checkpointing_name(host_ram) -> str:
    """The setting a run trained with, as --checkpointing names it."""
    if not host_ram.checkpointing:
        return "off"
    return "lean" if host_ram.returns_memory else "on"


def _checkpointable(model: str, width: int) -> bool:
    """Whether `model` has blocks that activation checkpointing recomputes (bc-resnet has)."""
    from edgecl.budget.host_ram import supports_checkpointing
    from models import build_model
    from models.frontend import FrontEndConfig

    return supports_checkpointing(build_model(model, 2, FrontEndConfig.for_sample_rate(16000),
                                              width))


def _int_list(_ctx, param, value: str) -> list[int]:
    from edgecl.errors import EdgeclError

    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or any(n < 1000 or n > 192_000 for n in numbers):
        raise EdgeclError(f"--{param.name.replace('_', '-')}: expected comma-separated sample "
                          f"rates from 1000 to 192000 Hz, got {value!r}")
    return numbers


@bench.command("train")
@registry_options.add_options([registry_options.run_option(name)
                               for name in ("dataset", "data_root")])
@click.option("--models", default="bc-resnet,baseline", show_default=True,
              help="Comma-separated models to time.")
@click.option("--sample-rates", default="8000,16000,44100,48000", show_default=True,
              callback=_int_list, help="Comma-separated sample rates (Hz) to time each model at.")
@click.option("--clip-seconds", type=float, default=None)
@click.option("--width", type=int, default=40, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--bn-recal-clips", type=int, default=1024, show_default=True,
              help="Clips of the BatchNorm re-estimation after each epoch (0 = off), as in "
                   "`edgecl train`.")
@click.option("--n-init-cls", type=int, default=2, show_default=True,
              help="Classes in the timed task (its training clips make one epoch).")
@click.option("--clips-per-class", type=int, default=100, show_default=True)
@click.option("--epochs", type=int, default=2, show_default=True,
              help="Epochs timed per model and rate (the median is reported).")
@click.option("--precision", "precisions", default="fp32", show_default=True,
              callback=_precision_list,
              help="Comma-separated training precisions to time (fp32, bf16, auto), e.g. "
                   "fp32,bf16: each model and rate in every one, with the speed-up over the "
                   "first.")
@click.option("--checkpointing", "checkpointings", default="off", show_default=True,
              callback=_checkpointing_list,
              help="Comma-separated activation checkpointing settings to time (off, on, lean), "
                   "e.g. off,on,lean: each model and rate in each, with "
                   "checkpointing_time_ratio, the epoch time over the first setting's (a model "
                   "without checkpointable blocks is timed off only).")
@click.option("--rounds", type=int, default=1, show_default=True,
              callback=option_range(1, 1000),
              help="Rounds of timing every precision and checkpointing setting in turn (the "
                   "median over rounds is reported).")
@click.option("--seed", type=int, default=3, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Where to train (timings on a GPU wait for its kernels to finish).")
@click.option("--workspace", type=click.Path(file_okay=False), default="workspace",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def bench_train_command(models: str, sample_rates: list[int], epochs: int, precisions: list[str],
                        checkpointings: tuple[str, ...], rounds: int, as_json: bool,
                        **options) -> None:
    """Time one training epoch per model and sample rate, on cached log-mel features, and
    measure its memory.

    Each model and rate trains the first task of a finetune run (--n-init-cls classes) for
    --epochs epochs after computing its features; prints the median epoch time, the time per
    training clip and the front end's and backbone's MACs per second of audio. With several
    --precision values, each model and rate is timed in each (interleaved over --rounds) and
    `speedup` is the first precision's epoch time over the row's; likewise --checkpointing
    off,on,lean with `checkpointing_time_ratio`. `peak_rss_bytes` is the process's peak resident
    set while the epochs ran (Linux: reset when they start; the feature cache and everything the
    process allocated before are in it), `estimate_bytes` the run's estimate of that peak
    (`--max-train-ram`'s) for the model, rate, batch and checkpointing.
    """
    from edgecl.config import RunConfig
    from edgecl.errors import EdgeclError
    from edgecl.results import format_table
    from models import MODEL_NAMES

    names = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if not names or unknown:
        raise EdgeclError(f"--models: expected comma-separated names from "
                          f"{', '.join(MODEL_NAMES)}, got {models!r}")
    rows = []
    for name in names:
        modes = checkpointings if _checkpointable(name, options["width"]) else ("off",)
        for rate in sample_rates:
            config = RunConfig(mode="finetune", model=name, sample_rate=rate, epochs=epochs,
                               patience=0, export=False, quiet=True, n_tasks=1,
                               exp_name=f"bench-train-{name}-{rate}", **options)
            rows += time_precisions(config, precisions, rounds, modes)
    if as_json:
        click.echo(json_text(rows))
        return
    click.echo(f"median of {epochs} epoch(s) on cached features, on {rows[0]['device']}, "
               f"{options['threads']} thread(s)"
               + (f"; median of {rounds} interleaved rounds, speedup against {precisions[0]}"
                  if len(precisions) > 1 else "")
               + ("; checkpointing_time_ratio: epoch time with checkpointing over without"
                  if len(checkpointings) > 1 else "")
               + "; peak_rss_bytes: the process's peak RSS during the epochs")
    click.echo(format_table(rows, ("model", "sample_rate", "clip_seconds", "train_clips",
                                   "precision", "checkpointing", "epoch_seconds",
                                   "ms_per_train_clip", "speedup", "epoch_cpu_seconds",
                                   "cpu_speedup", "checkpointing_time_ratio", "peak_rss_bytes",
                                   "estimate_bytes", "frontend_mmacs_per_second",
                                   "backbone_mmacs_per_second")))


def _float_list(_ctx, param, value: str) -> list[float]:
    from edgecl.errors import EdgeclError

    try:
        numbers = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or any(not 0 < n <= 600 for n in numbers):
        raise EdgeclError(f"--{param.name.replace('_', '-')}: expected comma-separated seconds "
                          f"above 0 and at most 600, got {value!r}")
    return numbers


def _thread_list(_ctx, param, value: str) -> list[int]:
    from edgecl.errors import EdgeclError

    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or any(not 1 <= n <= 1024 for n in numbers):
        raise EdgeclError(f"--{param.name.replace('_', '-')}: expected comma-separated thread "
                          f"counts from 1 to 1024, got {value!r}")
    return list(dict.fromkeys(numbers))


@bench.command("frontend")
@click.option("--sample-rates", default="8000,16000,44100,48000", show_default=True,
              callback=_int_list, help="Comma-separated sample rates (Hz).")
@click.option("--clip-seconds", default="5", show_default=True, callback=_float_list,
              help="Comma-separated clip lengths (s); the graph is exported per length.")
@click.option("--impls", default="conv,factored,torch,rfft", show_default=True,
              help="Comma-separated STFT implementations to compare.")
@click.option("--threads", default="1,2", show_default=True, callback=_thread_list,
              help="Comma-separated ONNX Runtime intra-op thread counts to time.")
@click.option("--runs", type=int, default=50, show_default=True,
              callback=option_range(1, 1_000_000),
              help="Timed runs per measurement (the median is reported).")
@click.option("--warmup", type=int, default=5, show_default=True,
              callback=option_range(0, 1_000_000))
@click.option("--width", type=int, default=40, show_default=True,
              callback=option_range(1, 1024),
              help="BC-ResNet width for the backbone's MACs per second of audio.")
@click.option("--eager-batch", type=int, default=0, show_default=True,
              callback=option_range(0, 4096),
              help="Also time PyTorch eager (one thread) at this batch size, ms per clip "
                   "(0: skip; the trainer computes features in batches of 64).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_frontend_command(sample_rates: list[int], clip_seconds: list[float], impls: str,
                           threads: list[int], runs: int, warmup: int, width: int,
                           eager_batch: int, as_json: bool) -> None:
    """Time the log-mel front end alone per STFT implementation and sample rate in ONNX Runtime.

    Each implementation (conv: direct DFT as one Conv; factored: two-stage Cooley-Tukey as
    grouped Convs; torch: torch.stft, the ONNX STFT op; rfft: the ONNX DFT op) is exported as
    the models are and run at batch 1: prints its MACs per second of audio, graph size, median
    ms per clip and ratio to conv at each thread count (all implementations timed in the same
    rounds), and its max |log-mel difference| from a float64 torch.stft reference. Then the
    backbone's MACs per second of audio per rate.
    """
    from edgecl.results import format_table
    from firmware_export.frontend_bench import MODEL_COLUMNS, bench_frontend, table_columns

    names = [name.strip() for name in impls.split(",") if name.strip()]
    results = bench_frontend(sample_rates, clip_seconds, names, threads, runs=runs,
                             warmup=warmup, width=width, eager_batch=eager_batch)
    if as_json:
        click.echo(json_text(results))
        return
    click.echo(f"front end alone, ONNX Runtime, batch 1, median of {runs} runs after {warmup} "
               f"warm-up runs; max_abs_diff: log-mel vs float64 torch.stft")
    click.echo(format_table(results["rows"], table_columns(threads, eager=eager_batch > 0)))
    click.echo(f"\nMACs per second of audio: the default front end and BC-ResNet-{width}'s "
               f"backbone (the DCASE limit counts the backbone)")
    click.echo(format_table(results["models"], MODEL_COLUMNS))


@bench.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--phase", type=click.IntRange(min=0), default=None, help="Only this phase.")
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True,
              callback=option_range(1, 1_000_000),
              help="Timed runs per measurement (the median is reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True,
              callback=option_range(0, 1_000_000))
@click.option("--no-stft-compare", is_flag=True,
              help="Skip the conv-DFT vs torch.stft front-end comparison (one extra export).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              callback=option_range(1, 1024),
              help="ONNX Runtime intra-op and PyTorch threads (1: a device core).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_export_command(run_dir: str, phase: int | None, runs: int, warmup: int,
                         no_stft_compare: bool, threads: int, as_json: bool) -> None:
    """Sizes, MACs, parameters and batch-1 latency (one thread unless --threads) of every
    exported phase.

    Latency is the median per clip over --runs after --warmup runs for PyTorch eager (from the
    phase checkpoint), ONNX Runtime fp32 and int8, with the front end's share of the ONNX time.
    Then the front end as torch.stft, conv DFT and factored DFT, alone and in the full fp32 model.
    """
    from edgecl.results import format_table
    from firmware_export.bench import FRONTEND_COLUMNS, ROW_COLUMNS, bench_export

    results = bench_export(run_dir, phase=phase, runs=runs, warmup=warmup, threads=threads,
                           compare_stft=not no_stft_compare)
    if as_json:
        click.echo(json_text(results))
        return
    click.echo(f"batch 1, {threads} thread(s), median of {runs} runs after {warmup} warm-up runs")
    click.echo(format_table(results["phases"], ROW_COLUMNS))
    if results["frontends"]:
        click.echo("\nfront end, last phase's model (fp32 ONNX Runtime):")
        click.echo(format_table(results["frontends"], FRONTEND_COLUMNS))
