"""The paper's tables from a workspace of runs: per method, mean and std over seeds and folds.

A method is every option of a run's config except the seed, the test fold and the options that do
not change what a run computes (workspace, exp_name, threads, quiet). Per run:

- A_avg, A_last, BWT, forgetting: as in results.json (edgecl.metrics);
- mem_update_s: mean over the run's memory updates of memory_update_seconds (none without memory);
- train_s: total training seconds over the run's phases;
- A_last_uncorrected: with `--bias-correction deployed`, A_last of the run's own uncorrected
  models (results.json's `uncorrected` block), so a table shows what the correction adds.

Each figure's mean and sample standard deviation (n - 1; null for a single run) are taken over the
method's complete runs. Incomplete runs (results.json with "complete": false) and failed grid
trials (WORKSPACE/grid.json) are listed apart and never averaged. A results.json or grid.json that
is not of the expected shape (edgecl.schema) is skipped and named in `unreadable`: one bad file
never stops the report of the rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecl.config import field_options
from edgecl.errors import EdgeclError
from edgecl.results import RESULTS_NAME
from edgecl.samplers import sampler_class, sampler_names
from edgecl.schema import GRID_STATE, problem, read_checked, read_results

# Options outside a method: those outside the run identity, and the seed and test fold.
NOT_METHOD = tuple(name for name, option in field_options().items() if not option.method)
METRICS = ("A_avg", "A_last", "BWT", "forgetting", "mem_update_s", "train_s",
           "A_last_uncorrected")


@dataclass
class Run:
    name: str  # folder relative to the workspace
    results: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.results.get("config", {})

    def figures(self) -> dict[str, float | None]:
        updates = [s for s in self.results.get("memory_update_seconds", []) if s is not None]
        train = [s for s in self.results.get("train_seconds", []) if s is not None]
        return {
            "A_avg": self.results.get("A_avg"),
            "A_last": self.results.get("A_last"),
            "BWT": self.results.get("BWT"),
            "forgetting": self.results.get("forgetting"),
            "mem_update_s": sum(updates) / len(updates) if updates else None,
            "train_s": sum(train) if train else None,
            "A_last_uncorrected": (self.results.get("uncorrected") or {}).get("A_last"),
        }


@dataclass
class MethodGroup:
    label: str
    key: dict[str, Any]  # the config options that define the method
    runs: list[Run] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        row: dict[str, Any] = {"method": self.label, "runs": len(self.runs),
                               "seeds": _sorted({r.config.get("seed") for r in self.runs}),
                               "folds": _sorted({r.config.get("test_fold") for r in self.runs})
                               if self.key.get("dataset") == "ESC-50" else None}
        for metric in METRICS:
            values = [v for v in (r.figures()[metric] for r in self.runs) if v is not None]
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(values)
        return row

    def phase_accuracy(self) -> list[list[float]]:
        return [list(r.results.get("phase_accuracy", [])) for r in self.runs]


def _sorted(values: set) -> list:
    """Numbers in order, a missing one (None) last."""
    return sorted(values, key=lambda v: (v is None, v or 0))


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); (None, None) for no values, std None for one."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def method_key(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(config.items()) if k not in NOT_METHOD}


def method_label(config: dict[str, Any]) -> str:
    """finetune, joint, random-m500, uncertainty-noisytune-k6-m500, ...; with distillation a
    suffix of its weights: -kd1-1 (output, feature), -kd1-1a (adaptive); -wa with weight
    aligning; -bic with bias correction in the loop
    (-bicd of the deployed model only); -cbb with class-balanced batches (-sqb square-root,
    -pgb progressive); -specaugment;
    -ilr0.0001 with another learning rate after phase 0; -bft5 with 5 epochs of class-balanced
    fine-tuning (-bft5lr0.001 at another lr); a BatchNorm recalibration other than the default
    adds -bn256 (its clips); training in bf16 adds -bf16; few-shot phases add -shots5 (K)."""
    return (_memory_label(config) + _distill_label(config) + _bias_label(config)
            + _recal_label(config) + _precision_label(config) + _shots_label(config))


_BATCH_SAMPLING_LABELS = {"class-balanced": "-cbb", "square-root": "-sqb", "progressive": "-pgb"}


def _bias_label(config: dict[str, Any]) -> str:
    label = "-wa" if config.get("weight_align") else ""
    bias_correction = config.get("bias_correction")
    if bias_correction in (True, "in-loop"):  # True: results.json from before `deployed`
        label += "-bic"
    elif bias_correction == "deployed":
        label += "-bicd"
    if config.get("mode") == "replay":
        label += _BATCH_SAMPLING_LABELS.get(config.get("batch_sampling", "uniform"), "")
    if config.get("augment", "none") != "none":
        label += f"-{config['augment']}"
    if config.get("lr_incremental") is not None:
        label += f"-ilr{config['lr_incremental']:g}"
    epochs = config.get("balanced_epochs") or 0
    if epochs and config.get("mode") == "replay":
        lr = config.get("balanced_lr", 1e-4)
        label += f"-bft{epochs}" + ("" if lr == 1e-4 else f"lr{lr:g}")
    return label


def _unless_default(config: dict[str, Any], name: str) -> Any:
    """The config's value of option `name`, None at its default (or when absent: a run from
    before it)."""
    default = field_options()[name].default
    value = config.get(name, default)
    return None if value == default else value


def _recal_label(config: dict[str, Any]) -> str:
    clips = _unless_default(config, "bn_recal_clips")
    return "" if clips is None else f"-bn{clips}"


def _precision_label(config: dict[str, Any]) -> str:
    precision = _unless_default(config, "precision")
    return "" if precision is None else f"-{precision}"


def _shots_label(config: dict[str, Any]) -> str:
    shots = config.get("shots")
    return "" if shots is None else f"-shots{shots}"


def _distill_label(config: dict[str, Any]) -> str:
    output, feature = config.get("distill_output") or 0, config.get("distill_feature") or 0
    if not (output or feature):
        return ""
    return f"-kd{output:g}-{feature:g}" + ("a" if config.get("distill_adaptive") else "")


def _memory_label(config: dict[str, Any]) -> str:
    mode = config.get("mode", "?")
    if mode != "replay":
        return str(mode)
    parts = [str(config.get("mem_manage"))]
    if config.get("mem_manage") in sampler_names():  # the parts its run names carry
        sampler = sampler_class(config["mem_manage"])
        parts += sampler.run_name_parts({**{o.name: o.default for o in sampler.options},
                                         **config})
    if config.get("memory_bytes") is not None:
        parts.append(f"b{config['memory_bytes']}")
    else:
        parts.append(f"m{config.get('memory_size')}")
    if config.get("memory_format", "float32") != "float32":
        parts.append(str(config["memory_format"]))
    return "-".join(parts)


@dataclass
class Workspace:
    groups: list[MethodGroup]
    incomplete: list[dict[str, Any]]  # {"run", "method", "reason"}
    varying: list[str]  # options that differ between groups besides the label's
    unreadable: list[str] = field(default_factory=list)  # "PATH: what is wrong", skipped


def load_workspace(workspace: str | Path, exclude: Path | None = None) -> Workspace:
    """Every run under `workspace` grouped by method; incomplete and failed runs apart."""
    workspace = Path(workspace)
    if not workspace.is_dir():
        raise EdgeclError(f"{workspace}: expected a workspace folder with runs in it")
    complete: list[Run] = []
    incomplete: list[dict[str, Any]] = []
    unreadable: list[str] = []
    seen: set[str] = set()
    for path in sorted(workspace.rglob(RESULTS_NAME)):
        if exclude is not None and exclude.resolve() in path.resolve().parents:
            continue
        try:
            run = Run(str(path.parent.relative_to(workspace)), read_results(path))
            label = method_label(run.config)
        except EdgeclError as error:
            unreadable.append(str(error))
            continue
        except (AttributeError, KeyError, TypeError, ValueError) as error:  # odd config values
            unreadable.append(f"{path}: unexpected content ({type(error).__name__}: {error})")
            continue
        seen.add(run.name)
        if run.results.get("complete"):
            complete.append(run)
        else:
            phases = len(run.results["phase_accuracy"])
            incomplete.append({"run": run.name, "method": label,
                               "reason": f"incomplete: {phases} of "
                                         f"{len(run.results.get('tasks', [])) or '?'} phases"})
    trials, grid_problem = _failed_trials(workspace, seen)
    incomplete += trials
    if grid_problem:
        unreadable.append(grid_problem)
    groups: dict[str, MethodGroup] = {}
    for run in complete:
        key = method_key(run.config)
        blob = json.dumps(key, sort_keys=True, default=str)
        if blob not in groups:
            groups[blob] = MethodGroup(method_label(run.config), key)
        groups[blob].runs.append(run)
    ordered = sorted(groups.values(), key=lambda g: _sort_key(g.key, g.label))
    varying = _varying_options(ordered)
    if varying:  # two groups share a label: tell them apart by the options that differ
        for group in ordered:
            extra = [f"{k}={group.key.get(k)}" for k in varying]
            group.label = f"{group.label} ({', '.join(extra)})"
    return Workspace(ordered, sorted(incomplete, key=lambda r: r["run"]), varying, unreadable)


_MODE_ORDER = {"finetune": 0, "joint": 1, "replay": 2}
_SAMPLER_ORDER = {"random": 0, "reservoir": 1, "prototype": 2, "uncertainty": 3}
_METRIC_ORDER = {"shift": 0, "noise": 1, "noisytune": 2}


def _sort_key(key: dict[str, Any], label: str) -> tuple:
    return (_MODE_ORDER.get(key.get("mode"), 9), -(key.get("memory_size") or 0),
            _SAMPLER_ORDER.get(key.get("mem_manage"), 9) if key.get("mode") == "replay" else 0,
            _METRIC_ORDER.get(key.get("uncert_metric"), 9)
            if key.get("mem_manage") == "uncertainty" else 0,
            key.get("metric_k") or 0, label)


def _varying_options(groups: list[MethodGroup]) -> list[str]:
    """Options that differ between groups whose labels are equal."""
    by_label: dict[str, list[MethodGroup]] = {}
    for g in groups:
        by_label.setdefault(g.label, []).append(g)
    varying: set[str] = set()
    for same in by_label.values():
        if len(same) < 2:
            continue
        keys = set().union(*(g.key for g in same))
        varying |= {k for k in keys if len({json.dumps(g.key.get(k), default=str) for g in same}) > 1}
    return sorted(varying)


def _failed_trials(workspace: Path, seen: set[str]) -> tuple[list[dict[str, Any]], str | None]:
    """Failed or cancelled trials recorded in grid.json whose run left no results.json, and what
    is wrong with grid.json when it cannot be read (None when it can, or there is none)."""
    path = workspace / "grid.json"
    if not path.is_file():
        return [], None
    try:
        state = read_checked(path, lambda document: problem(document, GRID_STATE))
    except EdgeclError as error:
        return [], str(error)
    out = []
    for name, entry in state.get("trials", {}).items():
        if entry.get("status") in ("failed", "cancelled") and name not in seen:
            error = (entry.get("error") or "").strip().splitlines()
            detail = error[-1] if error else ("not started" if not entry.get("attempts") else "")
            out.append({"run": name, "method": entry.get("method"),
                        "reason": f"{entry['status']}: {detail}" if detail else entry["status"]})
    return out, None
