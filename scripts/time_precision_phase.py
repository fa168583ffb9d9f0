"""One ESC-50-layout phase end to end, float32 against bfloat16: `edgecl train` on the first task
only (`--n-tasks 1`, the published first task's 10 classes), each precision in turn for ROUNDS
rounds in one process; prints the training time the phase records (`train_seconds`, wall), the
CPU seconds of its `fit` and of the whole phase (features, training, memory refill, testing and
checkpoint), and the fp32 / bf16 ratios of the medians. For docs/results/precision.md.

    python scripts/time_precision_phase.py DATA_ROOT WORKSPACE THREADS EPOCHS BATCH ROUNDS
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgecl.config import RunConfig  # noqa: E402
from edgecl.trainer import ContinualRun  # noqa: E402


def time_phase(root: str, workspace: str, threads: int, epochs: int, batch: int,
               precision: str) -> dict[str, float]:
    config = RunConfig(dataset="ESC-50", data_root=root, n_tasks=1, n_init_cls=10, epochs=epochs,
                       batch_size=batch, threads=threads, precision=precision, export=False,
                       quiet=True, workspace=workspace, exp_name=f"phase0-{precision}")
    started = time.process_time()
    run = ContinualRun(config, overwrite=True)
    fit_cpu = []
    real_fit = run._fit

    def timed_fit(*args, **kwargs):
        begun = time.process_time()
        report = real_fit(*args, **kwargs)
        fit_cpu.append(time.process_time() - begun)
        return report

    run._fit = timed_fit
    results = run.run()
    phase = results["phases"][0]
    return {"train_seconds": phase["train_seconds"], "fit_cpu_seconds": fit_cpu[0],
            "phase_cpu_seconds": time.process_time() - started,
            "train_clips": phase["n_train"], "accuracy": results["phase_accuracy"][0]}


def main() -> None:
    root, workspace = sys.argv[1], sys.argv[2]
    threads, epochs, batch, rounds = (int(a) for a in sys.argv[3:7])
    timed: dict[str, list[dict[str, float]]] = {"fp32": [], "bf16": []}
    for round_ in range(rounds):
        for precision in timed:
            row = time_phase(root, workspace, threads, epochs, batch, precision)
            timed[precision].append(row)
            print(f"round {round_} {precision}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    medians = {p: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
               for p, rows in timed.items()}
    for key in ("train_seconds", "fit_cpu_seconds", "phase_cpu_seconds"):
        fp32, bf16 = medians["fp32"][key], medians["bf16"][key]
        print(f"{key}: fp32 {fp32:.1f}, bf16 {bf16:.1f}, fp32 / bf16 {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
