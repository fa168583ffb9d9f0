"""Where a training epoch's CPU time goes, float32 against bfloat16: the first task of a finetune
run (as `edgecl bench train` sets it up: cached log-mels, 2 classes) is fitted under cProfile with
the process's CPU clock, once per precision in turn, and the CPU seconds of the parts of `fit`
are printed per epoch (cumulative, so nested parts are inside their parents); `--dump` also
prints each fit's functions by own CPU time (the torch ops). For docs/results/precision.md.

    python scripts/profile_precision_epoch.py RATE THREADS EPOCHS CLIPS_PER_CLASS BATCH [ROUNDS]
        [--dump]
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecl.commands.bench import import_optimizer_modules  # noqa: E402
from edgecl.config import RunConfig  # noqa: E402
from edgecl.trainer import ContinualRun  # noqa: E402

WORKSPACE = "workspace/profile-precision"  # the runs' folders, relative to the current directory
# (label, file suffix, function name) of the parts of an epoch shown.
PARTS = [
    ("fit", "training/loop.py", "fit"),
    ("  training steps", "training/loop.py", "_train_epoch"),
    ("    feature fetch", "edgecl/items.py", None),
    ("    forward (all passes)", "models/", "forward_features"),
    ("    backward", "torch/_tensor.py", "backward"),
    ("    optimizer step", "torch/optim/adam.py", "step"),
    ("  BatchNorm recalibration", "training/loop.py", "recalibrate_batchnorm"),
    ("  validation", "training/loop.py", "evaluate_with_loss"),
    ("  state_dict copies", "copy.py", "deepcopy"),
    ("  load_state_dict", "torch/nn/modules/module.py", "load_state_dict"),
    ("  progress", "training/epoch_progress.py", "__call__"),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str | None) -> float:
    total = 0.0
    for (path, _line, func), (_cc, _nc, _tt, ct, callers) in stats.stats.items():
        if suffix in path and (name is None or func == name):
            # count only calls from outside the same function (no double counting of recursion)
            if name is None and any(suffix in caller[0] for caller in callers):
                continue
            total += ct
    return total


def profile_fit(rate: int, threads: int, epochs: int, clips: int, batch: int,
                precision: str) -> tuple[dict[str, float], int]:
    config = RunConfig(mode="finetune", model="bc-resnet", sample_rate=rate, clip_seconds=5.0,
                       epochs=epochs, patience=0, export=False, quiet=True, n_tasks=1,
                       clips_per_class=clips, batch_size=batch, threads=threads, seed=3, n_init_cls=2,
                       width=40, precision=precision, workspace=WORKSPACE,
                       exp_name=f"profile-{rate}-{precision}")
    import_optimizer_modules()  # not charged to the first fit profiled
    run = ContinualRun(config, overwrite=True)
    task = run.plan.tasks[0]
    run.items.features.get([run.items.clip(lc.clip) for lc in task.train + task.val])
    profiler = cProfile.Profile(time.process_time)
    real_fit = run._fit

    def profiled(*args, **kwargs):
        profiler.enable()
        try:
            return real_fit(*args, **kwargs)
        finally:
            profiler.disable()

    run._fit = profiled
    trained = run.train_phase(0, [task])
    stats = pstats.Stats(profiler)
    epochs_run = trained.record.details["epochs_run"]
    parts = {label: cumulative(stats, suffix, name) / epochs_run
             for label, suffix, name in PARTS}
    if "--dump" in sys.argv:
        stats.sort_stats("tottime").print_stats(25)
    return parts, len(task.train)


def main() -> None:
    rate, threads, epochs, clips, batch = (int(a) for a in sys.argv[1:6])
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 and sys.argv[6].isdigit() else 1
    results: dict[str, list[dict[str, float]]] = {"fp32": [], "bf16": []}
    n_train = 0
    for _ in range(rounds):
        for precision in results:
            parts, n_train = profile_fit(rate, threads, epochs, clips, batch, precision)
            results[precision].append(parts)
    print(f"{rate} Hz, 5 s, {threads} thread(s), {epochs} epochs, {n_train} training clips, "
          f"batch {batch}: CPU seconds per epoch (best of {rounds} round(s)); ratio fp32 / bf16")
    for label, _suffix, _name in PARTS:
        fp32 = min(r[label] for r in results["fp32"])
        bf16 = min(r[label] for r in results["bf16"])
        ratio = f"{fp32 / bf16:.2f}x" if bf16 > 0.005 else "-"
        print(f"{label:28s} {fp32:8.3f} {bf16:8.3f}  {ratio}")


if __name__ == "__main__":
    main()
