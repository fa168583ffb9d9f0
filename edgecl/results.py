"""Run results: results.json (atomic), the human-readable train.log, and summary tables.

results.json keys: config, classes (arrival order), tasks (class names per task), phase_accuracy,
accuracy_matrix, A_avg, A_last, BWT, forgetting, published_bwt, memory_update_seconds and
train_seconds (one figure per phase; memory_update_seconds is null without a memory),
memory_balance (exemplars per class after each update), plus per-phase training details
(`phases`) and `complete` (false while the run is still going).

Each entry of `phases` also carries the device-budget figures: memory_bytes ({used, budget,
per_exemplar}), memory_exemplars, memory_capacity, memory_format and memory_update_macs
(edgecl.memory_update), train_steps, train_macs, stopped_for_budget and stopped_by
(edgecl.training.stop), peak_rss_bytes and device_train_ram_bytes (with its parts in
device_train_ram; edgecl.budget.ram).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError
from edgecl.fileio import atomic_write_json
from edgecl.metrics import summarize
from edgecl.run_folder import RESULTS_NAME

# The cross-run table in a terminal (fits 100 columns); `edgecl summarize --json` has every field.
SUMMARY_COLUMNS = ("run", "status", "dataset", "seed", "ep", "method", "mem", "A_avg", "A_last",
                   "BWT", "upd_s")
RUN_NAME_WIDTH = 18  # longer names keep their start and their distinctive end: "manif~k2-m6-seed3"


@dataclass
class PhaseRecord:
    """Everything measured in one phase (becomes one entry of results.json)."""

    seen_classes: list[str]
    accuracy: float = 0.0
    task_accuracy: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    memory_update_seconds: float | None = None
    memory_balance: dict[str, int] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"seen_classes": self.seen_classes, "accuracy": self.accuracy,
                "task_accuracy": self.task_accuracy, "train_seconds": self.train_seconds,
                "memory_update_seconds": self.memory_update_seconds,
                "memory_balance": self.memory_balance, **self.details}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PhaseRecord:
        """The record `as_dict()` gave (a resumed run's earlier phases)."""
        values = dict(values)
        return cls(seen_classes=values.pop("seen_classes"), accuracy=values.pop("accuracy"),
                   task_accuracy=values.pop("task_accuracy"),
                   train_seconds=values.pop("train_seconds"),
                   memory_update_seconds=values.pop("memory_update_seconds"),
                   memory_balance=values.pop("memory_balance"), details=values)


class RunLog:
    """Appends timestamped lines to train.log and echoes them to stderr unless quiet.

    The file is opened (for appending: a resumed run continues its log) at the first line."""

    def __init__(self, path: Path, echo: bool = True) -> None:
        self.path = Path(path)
        self._handle = None
        self.echo = echo

    def write_only(self, message: str) -> None:
        """Write to train.log without echoing (per-epoch detail)."""
        try:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a", encoding="utf-8")
            self._handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
            self._handle.flush()
        except OSError as error:  # e.g. no space left: name the log, not just the reason
            raise EdgeclError(f"{self.path}: could not write ({error.strerror or error})") from None

    def __call__(self, message: str) -> None:
        self.write_only(message)
        if self.echo:
            from tqdm import tqdm  # keeps progress bars intact
            tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def build_results(config: dict[str, Any], classes: Sequence[str], tasks: Sequence[Sequence[str]],
                  phases: Sequence[dict[str, Any]], complete: bool,
                  provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results.json document from per-phase records (each with accuracy, task_accuracy,
    train_seconds, memory_update_seconds, memory_balance and training details), with how the run
    was made (edgecl.provenance) when given: its `threads` is the last session's, `phase_threads`
    each phase's (a resumed run may have run its phases on other thread counts; null for a phase
    recorded without one)."""
    phase_accuracy = [p["accuracy"] for p in phases]
    matrix = [p["task_accuracy"] for p in phases]
    metrics = summarize(phase_accuracy, matrix)  # joint mode: one phase, one row over all tasks
    if provenance is not None:
        provenance = {**provenance, "phase_threads": [p.get("threads") for p in phases]}
    uncorrected = _uncorrected_metrics(phases)
    if uncorrected is not None:
        metrics["uncorrected"] = uncorrected
    return {
        "config": dict(config),
        "classes": list(classes),
        "tasks": [list(t) for t in tasks],
        "phase_accuracy": phase_accuracy,
        "accuracy_matrix": matrix,
        **metrics,
        "memory_update_seconds": [p["memory_update_seconds"] for p in phases],
        "train_seconds": [p["train_seconds"] for p in phases],
        "memory_balance": [p["memory_balance"] for p in phases],
        "phases": [{k: v for k, v in p.items() if k not in ("accuracy", "task_accuracy")}
                   for p in phases],
        "complete": complete,
        "provenance": provenance,
    }


def _uncorrected_metrics(phases: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """With `--bias-correction deployed`, the metrics of the run's own (uncorrected) models: each
    phase's `bias_correction.uncorrected_*` accuracy, or its accuracy where nothing was
    corrected (phase 0). None when no phase has them."""
    entries = [p.get("bias_correction") or {} for p in phases]
    if not any("uncorrected_accuracy" in e for e in entries):
        return None
    pairs = list(zip(phases, entries, strict=True))
    accuracy = [e.get("uncorrected_accuracy", p["accuracy"]) for p, e in pairs]
    matrix = [e.get("uncorrected_task_accuracy", p["task_accuracy"]) for p, e in pairs]
    return {"phase_accuracy": accuracy, "accuracy_matrix": matrix,
            **summarize(accuracy, matrix)}


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    """Write run_dir/results.json atomically."""
    return atomic_write_json(Path(run_dir) / RESULTS_NAME, results)


def count_range(balance: dict[str, int]) -> str:
    """Exemplars per class as a range ("62-63 for 8 classes"): a 50-entry dict reads badly."""
    counts = [n for n in balance.values() if n]
    if not counts:
        return "none"
    low, high = min(counts), max(counts)
    return f"{low if low == high else f'{low}-{high}'} for {len(counts)} classes"


def _fmt(value: Any, digits: int = 4) -> str:
    """Floats to `digits` significant digits (0.9833, 343.9, 0.0951): what the figures mean."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in columns]] + [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _total(balance: dict[str, int] | None) -> int | None:
    return None if balance is None else sum(balance.values())


def phase_table(results: dict[str, Any]) -> str:
    """Per-phase table of one run: accuracy, per-task accuracy, times, memory size."""
    rows = []
    for i, phase in enumerate(results["phases"]):
        rows.append({
            "phase": i,
            "classes": len(phase.get("seen_classes", [])),
            "accuracy": results["phase_accuracy"][i],
            "chance": 1 / max(1, len(phase.get("seen_classes", []))),
            "per_task": " ".join(f"{a:.2f}" for a in results["accuracy_matrix"][i]),
            "epochs": phase.get("epochs_run"),
            "steps": phase.get("train_steps"),
            "stop": phase.get("stopped_by") or ("epochs" if phase.get("epochs_run") else None),
            "train_s": results["train_seconds"][i],
            "mem_update_s": results["memory_update_seconds"][i],
            "memory": _total(results["memory_balance"][i]),
        })
    table = format_table(rows, ("phase", "classes", "accuracy", "chance", "per_task", "epochs",
                                "steps",
                                "stop", "train_s", "mem_update_s", "memory"))
    footer = "  ".join(f"{k} {_fmt(results.get(k))}" for k in
                       ("A_avg", "A_last", "BWT", "forgetting", "published_bwt"))
    return f"{table}\n{footer}"


def summary_row(run_name: str, results: dict[str, Any]) -> dict[str, Any]:
    """One row of the cross-run table."""
    config = results.get("config", {})
    mode = config.get("mode")
    method, k = _replay_method(config) if mode == "replay" else (mode, None)
    updates = [s for s in results.get("memory_update_seconds", []) if s is not None]
    row = {
        "run": run_name,
        "dataset": config.get("dataset"),
        "seed": config.get("seed"),
        "epochs": config.get("epochs"),
        "method": method,
        "k": k,
        "memory": config.get("memory_size") if mode == "replay" else None,
        "A_avg": results.get("A_avg"),
        "A_last": results.get("A_last"),
        "BWT": results.get("BWT"),
        "mem_update_s": sum(updates) / len(updates) if updates else None,
        "complete": results.get("complete", True),
    }
    return {**row, **_summary_budget_columns(results), **_summary_memory(results, config)}


def summary_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row as the terminal table shows it: short names, rounded figures."""
    name = str(row.get("run", ""))
    if len(name) > RUN_NAME_WIDTH:
        name = name[:5] + "~" + name[-(RUN_NAME_WIDTH - 6):]
    method = row.get("method") or "-"
    method = method.replace("uncertainty-", "") + (f" k{row['k']}" if row.get("k") else "")

    def rounded(key: str, digits: int) -> float | None:
        value = row.get(key)
        return None if value is None else round(float(value), digits)

    return {"run": name, "status": row.get("status"), "dataset": row.get("dataset"),
            "seed": row.get("seed"), "ep": row.get("epochs"), "method": method,
            "mem": row.get("memory"), "A_avg": rounded("A_avg", 3),
            "A_last": rounded("A_last", 3), "BWT": rounded("BWT", 3),
            "upd_s": rounded("mem_update_s", 2)}


def _replay_method(config: dict[str, Any]) -> tuple[str | None, int | None]:
    """(method label, k) of a replay run: the sampler's variant label (e.g. uncertainty-shift)
    and its metric_k when the sampler takes one."""
    from edgecl.samplers import sampler_class

    name = config.get("mem_manage")
    try:
        sampler = sampler_class(name)
    except EdgeclError:  # a sampler this version does not know: show its name
        return name, None
    label = next((label for label, options in sampler.variants()
                  if options and all(config.get(k) == v for k, v in options.items())), name)
    uses_k = any(option.name == "metric_k" for option in sampler.options)
    return label, config.get("metric_k") if uses_k else None


def _summary_memory(results: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """With a byte budget the memory column shows the exemplars it holds at capacity."""
    if config.get("mode") != "replay" or config.get("memory_bytes") is None:
        return {}
    capacities = [p.get("memory_capacity") for p in results.get("phases", [])]
    return {"memory": capacities[-1] if capacities else None}


def _summary_budget_columns(results: dict[str, Any]) -> dict[str, Any]:
    """Budget columns of the cross-run table, summed (or maxed) over the phases; numbers only
    (bytes as integers), so programs reading --json need not parse '16 MB'."""
    config, phases = results.get("config", {}), results.get("phases", [])

    def total(key: str, scale: float | None = None):
        values = [p.get(key) for p in phases if p.get(key) is not None]
        if not values:
            return None
        return sum(values) if scale is None else round(sum(values) / scale, 3)

    used = [p["memory_bytes"]["used"] for p in phases if p.get("memory_bytes")]
    ram = [p["device_train_ram_bytes"] for p in phases if p.get("device_train_ram_bytes")]
    replay = config.get("mode") == "replay"
    budget = config.get("memory_bytes")
    return {
        "format": config.get("memory_format") if replay else None,
        "memory_bytes_used": used[-1] if used else None,
        "memory_bytes_budget": budget,
        "steps": total("train_steps"),
        "train_GMAC": total("train_macs", 1e9),
        "update_GMAC": total("memory_update_macs", 1e9),
        "device_train_ram_bytes": max(ram) if ram else None,
        "budget_stops": sum(1 for p in phases if p.get("stopped_for_budget")) if phases else None,
    }
