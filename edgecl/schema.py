"""Shapes of the files edgecl reads back, checked where they are read.

results.json, run.json, grid.json, state.pt and bundle manifests may have been cut short, edited
by hand or written by another version: a reader gets either a document of the expected shape or a one-line reason
naming the field at fault, never a traceback from deep inside a table or a plot. A spec is a type
(or tuple of types), `Nullable(spec)`, `ListOf(spec)`, `DictOf(spec)` or `Fields(...)`: an object
whose listed fields, when present, match their specs (unlisted fields are free, so files of older
and newer versions still read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError

NUMBER = "number"  # int or float, never bool (True is an int to Python, not to a reader)


@dataclass(frozen=True)
class Nullable:
    spec: Any


@dataclass(frozen=True)
class ListOf:
    spec: Any


@dataclass(frozen=True)
class DictOf:
    spec: Any


@dataclass(frozen=True)
class Fields:
    fields: dict[str, Any]
    required: tuple[str, ...] = ()


_NAMES = {dict: "a JSON object", list: "a list", str: "a string", bool: "true or false",
          int: "an integer", float: "a number", type(None): "null"}


def describe(spec: Any) -> str:
    """What `spec` expects, in words ("a list of numbers")."""
    if spec == NUMBER:
        return "a number"
    if isinstance(spec, Nullable):
        return f"{describe(spec.spec)} or null"
    if isinstance(spec, ListOf):
        inner = describe(spec.spec).removeprefix("an ").removeprefix("a ").removeprefix("JSON ")
        return f"a list of {inner}s" if " " not in inner else f"a list of ({inner})"
    if isinstance(spec, (DictOf, Fields)):
        return "a JSON object"
    if isinstance(spec, tuple):
        return " or ".join(describe(s) for s in spec)
    return _NAMES.get(spec, getattr(spec, "__name__", str(spec)))


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def problem(value: Any, spec: Any, where: str = "") -> str | None:
    """Why `value` does not match `spec` (None when it does); `where` names the field."""
    if spec == NUMBER:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(spec, Nullable):
        return None if value is None else problem(value, spec.spec, where)
    elif isinstance(spec, tuple):
        ok = any(problem(value, s) is None for s in spec)
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            ok = False
        else:
            for i, item in enumerate(value):
                found = problem(item, spec.spec, f"{where}[{i}]")
                if found is not None and isinstance(spec.spec, Fields) and isinstance(item, dict):
                    return found  # the field inside the object at fault
                if found is not None:
                    return (f"field {where or 'document'} must be {describe(spec)} (item {i} is "
                            f"{_json_type(item)})")
            return None
    elif isinstance(spec, DictOf):
        if not isinstance(value, dict):
            ok = False
        else:
            return next((problem(v, spec.spec, f"{where}[{k!r}]") for k, v in value.items()
                         if problem(v, spec.spec) is not None), None)
    elif isinstance(spec, Fields):
        if not isinstance(value, dict):
            ok = False
        else:
            return fields_problem(value, spec, where)
    else:
        ok = isinstance(value, spec) and not (isinstance(value, bool) and spec in (int, float))
    if ok:
        return None
    if not where:
        return f"expected {describe(spec)}, found {_json_type(value)}"
    return f"field {where} has the wrong type ({_json_type(value)}; expected {describe(spec)})"


def fields_problem(document: dict[str, Any], spec: Fields, where: str = "") -> str | None:
    """Field types first (a present field of the wrong type says more), then missing fields."""
    for key, field_spec in spec.fields.items():
        if key in document:
            found = problem(document[key], field_spec, f"{where}.{key}" if where else repr(key))
            if found is not None:
                return found
    missing = [key for key in spec.required if key not in document]
    if missing:
        inside = f" in {where}" if where else ""
        return (f"missing field{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}{inside}")
    return None


# --- results.json ---------------------------------------------------------------------------

# The options the summaries and method labels read (edgecl.results, edgecl.report.aggregate).
CONFIG = Fields({
    **{name: Nullable(NUMBER) for name in (
        "seed", "test_fold", "epochs", "memory_size", "memory_bytes", "metric_k",
        "lr_incremental", "balanced_epochs", "balanced_lr", "distill_output", "distill_feature",
        "bn_recal_clips")},
    **{name: Nullable(str) for name in (
        "dataset", "mode", "mem_manage", "memory_format", "uncert_metric", "augment",
        "batch_sampling")},
    "bias_correction": Nullable((str, bool)),
})
# The per-phase fields the tables and summaries read (edgecl.results, edgecl.report).
PHASE = Fields({
    "seen_classes": ListOf(str), "epochs_run": Nullable(NUMBER), "train_steps": Nullable(NUMBER),
    "train_macs": Nullable(NUMBER), "memory_update_macs": Nullable(NUMBER),
    "memory_capacity": Nullable(NUMBER), "memory_bytes": Nullable(Fields({"used": NUMBER},
                                                                         ("used",))),
    "device_train_ram_bytes": Nullable(NUMBER), "stopped_by": Nullable(str),
    "threads": Nullable(int),
})
RESULTS = Fields({
    "config": CONFIG, "classes": ListOf(str), "tasks": ListOf(ListOf(str)),
    "phase_accuracy": ListOf(NUMBER), "accuracy_matrix": ListOf(ListOf(NUMBER)),
    "A_avg": Nullable(NUMBER), "A_last": Nullable(NUMBER), "BWT": Nullable(NUMBER),
    "forgetting": Nullable(NUMBER), "published_bwt": Nullable(NUMBER),
    "memory_update_seconds": ListOf(Nullable(NUMBER)), "train_seconds": ListOf(Nullable(NUMBER)),
    "memory_balance": ListOf(Nullable(DictOf(NUMBER))), "phases": ListOf(PHASE),
    "complete": bool, "uncorrected": Nullable(Fields({"A_last": Nullable(NUMBER)})),
    "provenance": Nullable(dict),
})
# What a summary or report needs of a run, and what `edgecl train` shows of a complete one.
SUMMARY_FIELDS = ("config", "phase_accuracy")
TABLE_FIELDS = SUMMARY_FIELDS + ("accuracy_matrix", "train_seconds", "memory_update_seconds",
                                 "memory_balance", "phases", "complete")
_PER_PHASE = ("accuracy_matrix", "memory_update_seconds", "train_seconds", "memory_balance",
              "phases")


def results_problem(document: Any, required: tuple[str, ...] = SUMMARY_FIELDS) -> str | None:
    """Why `document` is not a results.json edgecl can read (None when it is): the types of its
    fields, the `required` ones present, and one entry per phase in every per-phase list."""
    found = problem(document, Fields(RESULTS.fields, required))
    if found is not None:
        return found
    phases = len(document.get("phase_accuracy", []))
    for key in _PER_PHASE:
        if key in document and len(document[key]) != phases:
            return (f"field {key!r} has {len(document[key])} entries for {phases} phases "
                    f"(field 'phase_accuracy')")
    return None


def read_json(path: str | Path) -> Any:
    """The JSON document at `path`; EdgeclError "PATH: not readable JSON (why)" otherwise."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        detail = " ".join(str(error).split())[:200]
        raise EdgeclError(f"{path}: not readable JSON ({detail})") from None


def read_checked(path: str | Path, spec_problem) -> Any:
    """read_json, then `spec_problem(document)`: EdgeclError "PATH: why" when it says one."""
    document = read_json(path)
    found = spec_problem(document)
    if found is not None:
        raise EdgeclError(f"{path}: {found}")
    return document


def read_results(path: str | Path, required: tuple[str, ...] = SUMMARY_FIELDS) -> dict[str, Any]:
    """results.json at `path`, checked (see results_problem)."""
    return read_checked(path, lambda document: results_problem(document, required))


# --- run.json and grid.json -----------------------------------------------------------------

RUN_RECORD = Fields({"config": dict}, ("config",))
GRID_STATE = Fields({"trials": DictOf(Fields({"status": str, "error": Nullable(str),
                                                "method": Nullable(str),
                                                "attempts": Nullable(NUMBER)}))})
