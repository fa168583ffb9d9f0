"""Grid specs: a TOML file of `edgecl train` options expanded into one trial per configuration.

A spec (stdlib tomllib, so no extra dependency):

    name = "esc-50"                  # optional; defaults to the file's stem
    description = "..."              # optional
    seeds = [1, 2, 3]                # --seed of each trial
    folds = [1, 2, 3, 4, 5]          # optional: --test-fold of each trial (ESC-50)
    memory_sizes = [500, 300]        # optional: --memory-size of each trial with mode "replay"

    [common]                         # options every trial gets (edgecl train's, in snake_case)
    dataset = "ESC-50"
    n_tasks = 5

    [[methods]]                      # one table per method: a name and its own options
    name = "finetune"
    mode = "finetune"

    [[methods]]
    name = "uncertainty"
    mode = "replay"
    mem_manage = "uncertainty"
    uncert_metric = ["shift", "noise", "noisytune"]   # a list expands: one method per value
    metric_k = [2, 4, 6]

Expansion is the cartesian product seeds x folds x methods (x memory sizes for replay methods).
Option values are `edgecl train` option values: strings, numbers, and booleans for on/off options
(`export = false` gives `--no-export`, `quiet = true` gives `--quiet`). Options the grid sets
itself (workspace, exp_name, threads, quiet) cannot appear in a spec.

Each trial's run folder (`--exp-name`) is a readable prefix (method, memory, fold, seed) plus a
short hash of every option of the trial, so two trials share a folder only when every option is
equal.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgecl.config import NOT_IDENTITY, train_options
from edgecl.errors import EdgeclError

# Options the grid owns: set per trial by the runner, never by a spec.
# `device` too: the grid gives each trial its GPUs and says which device it trains on
# (edgecl.grid.gpus).
GRID_OWNED = ("workspace", "exp_name", "threads", "quiet", "device")
# Options that do not change what a run computes (outside its identity); left out of the
# run-folder hash.
NOT_HASHED = NOT_IDENTITY
# Built-in specs shipped as package data (edgecl/grid/specs/<name>.toml); aliases are lower-cased.
BUILTIN_ALIASES = {"tau-asc": "tau-asc", "tau": "tau-asc", "esc-50": "esc-50", "esc50": "esc-50",
                   "fsdd": "fsdd", "fsdd-m50": "fsdd-m50"}
# Short spellings of swept values in method labels: metric_k 6 -> "k6".
_LABEL_PREFIX = {"metric_k": "k", "memory_size": "m", "memory_bytes": "b", "width": "w",
                 "epochs": "e", "distill_output": "kdo", "distill_feature": "kdf",
                 "val_fraction": "val", "balanced_epochs": "bft", "uncert_trim": "trim"}


def canonical_value(name: str, value: Any) -> Any:
    """`value` as edgecl train would parse it (so 5, "5" and 5.0 for an int option agree);
    raises EdgeclError for an unknown option or a value the option rejects."""
    import click

    options = train_options()
    if name not in options:
        raise EdgeclError(f"grid spec: '{name}' is not an edgecl train option "
                          f"(known: {', '.join(sorted(options))})")
    option = options[name]
    if isinstance(value, bool) or option.is_bool:
        if not isinstance(value, bool):
            raise EdgeclError(f"grid spec: '{name}' is an on/off option; expected true or false, "
                              f"got {value!r}")
        return value
    try:
        converted = option.click_type().convert(value, None, None)
    except click.BadParameter as error:
        raise EdgeclError(f"grid spec: '{name}' = {value!r}: {error.message}") from None
    return converted


def option_args(name: str, value: Any) -> list[str]:
    """Command-line arguments of one option: ["--epochs", "5"], ["--no-export"], ["--quiet"]."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        if value:
            return [flag]
        return ["--no-" + name.replace("_", "-")]
    if value is None:
        return []
    return [flag, str(value)]


def parse_train_args(args: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse `edgecl train` arguments (train.sh's EXTRA...) into a {name: value} dict."""
    by_flag: dict[str, tuple[str, Any]] = {}
    for name, option in train_options().items():
        by_flag[option.flag_name] = (name, True if option.is_bool else None)
        if option.is_bool and option.flag == "pair":
            by_flag["--no-" + option.flag_name[2:]] = (name, False)
    out: dict[str, Any] = {}
    i = 0
    args = list(args)
    while i < len(args):
        token = args[i]
        flag, eq, inline = token.partition("=")
        if flag not in by_flag:
            raise EdgeclError(f"train option '{token}': not an edgecl train option")
        name, flag_value = by_flag[flag]
        if flag_value is not None:
            out[name] = flag_value
            i += 1
            continue
        if eq:
            out[name] = inline
            i += 1
        elif i + 1 < len(args):
            out[name] = args[i + 1]
            i += 2
        else:
            raise EdgeclError(f"train option '{token}': expects a value")
    return out


@dataclass(frozen=True)
class Trial:
    """One `edgecl train` run of a grid."""

    name: str  # run folder under the workspace (--exp-name)
    method: str  # method label, e.g. uncertainty-noisytune-k6-m500
    options: dict[str, Any]  # every train option (snake_case), grid-owned ones excluded
    seed: int
    fold: int | None

    def train_args(self, workspace: str | Path, threads: int = 1,
                   device: str | None = None) -> list[str]:
        """The arguments after `edgecl train` for this trial (`--device` when given)."""
        args: list[str] = []
        for name in sorted(self.options):
            args += option_args(name, self.options[name])
        args += ["--workspace", str(workspace), "--exp-name", self.name,
                 "--threads", str(threads), "--quiet"]
        return args + (["--device", device] if device else [])


@dataclass
class GridSpec:
    name: str
    common: dict[str, Any] = field(default_factory=dict)
    methods: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [1])
    folds: list[int] | None = None
    memory_sizes: list[int] | None = None
    description: str = ""

    def trials(self, overrides: dict[str, Any] | None = None) -> list[Trial]:
        """Every trial of the grid (seed outermost, so a cut-short grid has whole seeds).
        `overrides` (e.g. --data-root or train.sh's extra options) apply to every trial."""
        overrides = dict(overrides or {})
        for name in overrides:
            if name in GRID_OWNED:
                raise EdgeclError(f"grid: --{name.replace('_', '-')} is set by the grid itself")
        methods = [(label, opts) for name, opts in self.methods
                   for label, opts in _expand_method(name, opts)]
        trials: list[Trial] = []
        for seed, fold, (label, method_opts) in itertools.product(
                self.seeds, self.folds or [None], methods):
            options = {**self.common, **method_opts, **overrides, "seed": seed}
            if fold is not None:
                options["test_fold"] = fold
            sizes = self.memory_sizes if options.get("mode") == "replay" else None
            for size in sizes or [None]:
                opts = dict(options)
                method = label
                if size is not None and "memory_size" not in method_opts \
                        and "memory_size" not in overrides:
                    opts["memory_size"] = size
                    method = f"{label}-m{size}"
                opts = {k: canonical_value(k, v) for k, v in opts.items() if v is not None}
                trials.append(Trial(trial_name(method, opts), method, opts, seed, fold))
        by_hash: dict[str, str] = {}
        for trial in trials:  # the same options under two method names would run twice
            digest = options_hash(trial.options)
            if digest in by_hash:
                raise EdgeclError(f"grid spec {self.name}: trials {by_hash[digest]} and "
                                  f"{trial.name} have identical options")
            by_hash[digest] = trial.name
        return trials


def select_methods(trials: list[Trial], patterns: list[str]) -> list[Trial]:
    """The trials whose method label matches one of the shell-style patterns (e.g. 'pgb-*').
    A pattern that matches no method is an error naming the methods there are."""
    labels = list(dict.fromkeys(t.method for t in trials))
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(label, pattern) for label in labels):
            raise EdgeclError(f"--methods: '{pattern}' matches no method of this grid "
                              f"({', '.join(labels)})")
    return [t for t in trials if any(fnmatch.fnmatchcase(t.method, p) for p in patterns)]


def options_hash(options: dict[str, Any], length: int = 10) -> str:
    """Short stable hash of a trial's options (grid-owned options left out)."""
    kept = {k: v for k, v in options.items() if k not in NOT_HASHED}
    blob = json.dumps(kept, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def trial_name(method: str, options: dict[str, Any]) -> str:
    """Run-folder name: method label, fold, seed, then a hash of every option."""
    parts = [method]
    if "test_fold" in options and options.get("dataset") == "ESC-50":
        parts.append(f"fold{options['test_fold']}")
    parts.append(f"seed{options.get('seed')}")
    safe = "-".join(str(p) for p in parts).replace("/", "_").replace(" ", "_")
    return f"{safe}-{options_hash(options)}"


def _expand_method(name: str, options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A method whose options hold lists becomes one method per combination of their values."""
    swept = [k for k, v in options.items() if isinstance(v, list)]
    if not swept:
        return [(name, dict(options))]
    out = []
    for values in itertools.product(*(options[k] for k in swept)):
        chosen = dict(zip(swept, values, strict=True))
        opts = {**options, **chosen}
        label = "-".join([name] + [f"{_LABEL_PREFIX.get(k, '')}{v}" for k, v in chosen.items()])
        out.append((label, opts))
    return out


def _int_list(raw: Any, key: str, source: str) -> list[int] | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in raw):
        raise EdgeclError(f"{source}: '{key}' must be a non-empty list of integers, got {raw!r}")
    return list(raw)


def parse_spec(document: dict[str, Any], name: str, source: str) -> GridSpec:
    """A GridSpec from a parsed TOML document; every option is checked against edgecl train."""
    known = {"name", "description", "common", "methods", "seeds", "folds", "memory_sizes"}
    unknown = sorted(set(document) - known)
    if unknown:
        raise EdgeclError(f"{source}: unknown key(s) {', '.join(unknown)} "
                          f"(expected {', '.join(sorted(known))})")
    common = document.get("common", {})
    if not isinstance(common, dict):
        raise EdgeclError(f"{source}: [common] must be a table of edgecl train options")
    methods_raw = document.get("methods")
    if not isinstance(methods_raw, list) or not methods_raw:
        raise EdgeclError(f"{source}: expected at least one [[methods]] table")
    methods = []
    for i, method in enumerate(methods_raw):
        if not isinstance(method, dict) or not isinstance(method.get("name"), str):
            raise EdgeclError(f"{source}: [[methods]] #{i + 1} needs a name = \"...\"")
        opts = {k: v for k, v in method.items() if k != "name"}
        methods.append((method["name"], opts))
    for where in [common] + [opts for _, opts in methods]:
        for key, value in where.items():
            if key in GRID_OWNED + ("seed",):
                raise EdgeclError(f"{source}: '{key}' is set by the grid, not by a spec")
            for v in value if isinstance(value, list) else [value]:
                canonical_value(key, v)
    spec = GridSpec(
        name=str(document.get("name", name)),
        description=str(document.get("description", "")),
        common=dict(common),
        methods=methods,
        seeds=_int_list(document.get("seeds", [1]), "seeds", source),
        folds=_int_list(document.get("folds"), "folds", source),
        memory_sizes=_int_list(document.get("memory_sizes"), "memory_sizes", source),
    )
    spec.trials()  # catches duplicate trials early
    return spec


def builtin_names() -> list[str]:
    return sorted(set(BUILTIN_ALIASES.values()))


def load_spec(spec: str | Path) -> GridSpec:
    """A spec from a TOML file, or a built-in spec by name (see `builtin_names`)."""
    path = Path(spec)
    if path.is_file():
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise EdgeclError(f"{path}: not a readable TOML grid spec ({error})") from None
        return parse_spec(document, path.stem, str(path))
    builtin = BUILTIN_ALIASES.get(str(spec).lower())
    if builtin is None:
        raise EdgeclError(f"grid spec '{spec}': no such file, and not a built-in spec "
                          f"({', '.join(builtin_names())})")
    text = resources.files("edgecl.grid").joinpath("specs", f"{builtin}.toml").read_text("utf-8")
    return parse_spec(tomllib.loads(text), builtin, f"built-in spec {builtin}")
