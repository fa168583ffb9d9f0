"""What a trained phase records and logs: its `details` in results.json, the run's closing notes on
exports that were not shipped, and the percentages of its log lines."""

from __future__ import annotations

from typing import Any


def percent(value: float | None) -> str:
    """A share as a log line shows it: 0.4567 -> 45.7%, None -> -."""
    return "-" if value is None else f"{100 * value:.1f}%"


def training_details(report, costs: dict[str, Any], *, n_train: int, n_val: int, device,
                     features, ram) -> dict[str, Any]:
    """A phase's `details` after its training: the FitReport `report`, the stop condition's
    `costs`, the clips, the feature cache's counts and the device training RAM `ram`."""
    return {
        "epochs_run": report.epochs_run, "best_epoch": report.best_epoch,
        "best_val_accuracy": report.best_val_accuracy,
        "best_val_loss": report.best_val_loss, "selected_by": report.selected_by,
        "steps": report.steps,
        "stopped_by": report.stopped_by, "epoch_seconds": report.epoch_seconds,
        "n_train": n_train, "n_val": n_val, "device": str(device),
        "feature_cache": {"enabled": features.enabled, "entries": len(features),
                          "computed": features.computed, "loaded": features.loaded,
                          "seconds": features.seconds},
        # One stop-reason field: stopped_by names patience or the budget limit reached.
        **{k: v for k, v in costs.items() if k != "stop_reason"},
        "device_train_ram_bytes": ram.total, "device_train_ram": ram.as_dict(),
    }


def export_notes(exports: list[dict[str, Any]]) -> list[str]:
    """The run log's closing lines on phases whose device bundle (the `export` entries of its
    phases, in order) was not shipped or ships without int8 or TFLM."""
    notes = []
    unshipped = [i for i, e in enumerate(exports) if e.get("shipped") is False]
    if unshipped:
        notes.append(f"WARNING: the device bundles of phases {unshipped} missed the fp32 parity "
                     f"bound and were not shipped; see 'export' in results.json")
    withheld = [i for i, e in enumerate(exports) if e.get("int8") == "withheld"]
    if withheld:
        notes.append(f"note: phases {withheld} ship fp32 only: their int8 build missed its "
                     f"parity rule after the search; see 'export' in results.json")
    no_tflm = [i for i, e in enumerate(exports) if e.get("tflm") == "withheld"]
    if no_tflm:
        notes.append(f"note: phases {no_tflm} ship no TFLM build: it missed its parity rule; "
                     f"see 'export' in results.json")
    return notes


def run_header(config, memory, plan, split) -> list[str]:
    """The run log's first lines: the method, its memory, the tasks of `plan` and the dataset."""
    with_memory = ""
    if memory is not None:  # an empty memory (a fresh run) is described too
        with_memory = (f" with {config.mem_manage} memory of {memory.capacity} "
                       f"{memory.format.name} exemplars"
                       + (f" ({config.memory_bytes} bytes)" if config.memory_bytes else ""))
    return [f"run {config.name}: {config.mode}{with_memory}, {len(plan.tasks)} tasks, classes in "
            f"order {plan.class_order}",
            f"dataset {split.name}: {len(split.train)} train / {len(split.test)} test clips at "
            f"{split.sample_rate} Hz, {split.clip_seconds} s", *shots_lines(config.shots, plan)]


def shots_lines(shots: int | None, plan) -> list[str]:
    """The run log's lines on few-shot phases: K, and the classes that have fewer clips."""
    from edgecl.tasks import short_of_shots

    if shots is None:
        return []
    lines = [f"few-shot: {shots} training clips per new class in phases >= 1 (phase 0 keeps all)"]
    short = short_of_shots(plan, shots)
    if short:
        lines.append(f"  --shots {shots} is more than the training clips of {len(short)} "
                     f"classes, which keep all: " + ", ".join(
                         f"{name!r} {n} (phase {task})" for task, name, n in short))
    return lines
