"""The run configuration of `edgecl train`: one dataclass, its defaults and its validation.

Defaults follow the published ASC-CL code (replay with prototype sampling, memory 500, Adam at
1e-3, batch 32, 30 epochs, patience 7, seed 3, noisytune with k = 6) except `noise_lambda`, which
is 0.2 as in the paper's description (the published code's default is 0.4).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edgecl.errors import EdgeclError

DATASETS = ("synthetic", "ESC-50", "TAU-ASC", "manifest")
MODELS = ("bc-resnet", "baseline")
MODES = ("finetune", "replay", "joint")
MEM_MANAGERS = ("random", "reservoir", "prototype", "uncertainty")
UNCERT_METRICS = ("shift", "noise", "noisytune")
METRIC_KS = (2, 4, 6)

MEMORY_FORMATS = ("float32", "pcm16", "mulaw8", "logmel8")  # edgecl.memory.formats

# Options that only make sense with a replay memory / with the uncertainty sampler.
MEMORY_OPTIONS = ("mem_manage", "uncert_metric", "metric_k", "noise_lambda", "memory_size",
                  "memory_bytes", "memory_format", "code_new_clips")
UNCERTAINTY_OPTIONS = ("uncert_metric", "metric_k", "noise_lambda")

# (n_tasks, n_init_cls, n_cls_a_task) of the published experiments.
PUBLISHED_TASKS = {"TAU-ASC": (5, 2, 2), "ESC-50": (5, 10, 10)}
DEFAULT_N_TASKS = 5


def option_name(field_name: str) -> str:
    """The CLI spelling of a config field: memory_size -> --memory-size."""
    return "--" + field_name.replace("_", "-")


@dataclass(frozen=True)
class RunConfig:
    """Every option of one continual-learning run (recorded in results.json as `config`)."""

    dataset: str = "synthetic"
    data_root: str | None = None
    sample_rate: int | None = None  # override the model's rate (manifest, synthetic)
    clip_seconds: float | None = None  # override the clip length
    clips_per_class: int = 100  # synthetic dataset size
    model: str = "bc-resnet"
    width: int = 40
    mode: str = "replay"
    mem_manage: str = "prototype"
    uncert_metric: str = "noisytune"
    metric_k: int = 6
    noise_lambda: float = 0.2
    memory_size: int = 500
    memory_format: str = "float32"
    # Device budgets (edgecl.budget): a byte budget sets the memory's capacity in exemplars of
    # memory_format (memory_size is then unused); compute limits apply to each phase.
    memory_bytes: int | None = None
    max_steps: int | None = None
    max_train_seconds: float | None = None
    max_train_macs: int | None = None
    # Train on new clips passed through a lossy memory_format too (see ContinualRun._new_clip_item).
    code_new_clips: bool = True
    n_tasks: int | None = None
    n_init_cls: int | None = None
    n_cls_a_task: int | None = None
    seed: int = 3
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 7
    test_fold: int = 1
    workspace: str = "workspace"
    exp_name: str | None = None
    export: bool = True
    feature_cache: bool = True
    threads: int = 2
    quiet: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("dataset", DATASETS), ("model", MODELS), ("mode", MODES),
                              ("mem_manage", MEM_MANAGERS), ("uncert_metric", UNCERT_METRICS),
                              ("memory_format", MEMORY_FORMATS)):
            if getattr(self, name) not in allowed:
                raise EdgeclError(f"{option_name(name)}: expected one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        if self.metric_k not in METRIC_KS:
            raise EdgeclError(f"--metric-k: expected one of 2, 4, 6, got {self.metric_k}")
        for name in ("width", "epochs", "batch_size", "threads", "clips_per_class"):
            if getattr(self, name) < 1:
                raise EdgeclError(f"{option_name(name)}: expected a positive integer, "
                                  f"got {getattr(self, name)}")
        for name in ("memory_size", "patience"):
            if getattr(self, name) < 0:
                raise EdgeclError(f"{option_name(name)}: expected an integer >= 0, "
                                  f"got {getattr(self, name)}")
        for name in ("n_tasks", "n_init_cls", "n_cls_a_task"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EdgeclError(f"{option_name(name)}: expected a positive integer, got {value}")
        if self.sample_rate is not None and self.sample_rate < 1:
            raise EdgeclError(f"--sample-rate: expected a positive rate in Hz, got {self.sample_rate}")
        if self.clip_seconds is not None and not self.clip_seconds > 0:
            raise EdgeclError(f"--clip-seconds: expected a positive length, got {self.clip_seconds}")
        if not self.lr > 0:
            raise EdgeclError(f"--lr: expected a positive learning rate, got {self.lr}")
        if not self.noise_lambda >= 0:
            raise EdgeclError(f"--noise-lambda: expected a number >= 0, got {self.noise_lambda}")
        self._check_budgets()
        if self.dataset != "synthetic" and not self.data_root:
            raise EdgeclError(f"--data-root: required for --dataset {self.dataset}")

    def _check_budgets(self) -> None:
        from edgecl.budget import parse_bytes, parse_count

        if self.memory_bytes is not None:  # "4MB" from Python callers too; stored as an int
            object.__setattr__(self, "memory_bytes", parse_bytes(self.memory_bytes))
        if self.max_train_macs is not None:
            object.__setattr__(self, "max_train_macs",
                               parse_count(self.max_train_macs, "--max-train-macs"))
        self.compute_budget()  # validates the limits

    def compute_budget(self):
        """The per-phase edgecl.budget.ComputeBudget of this run."""
        from edgecl.budget import ComputeBudget

        return ComputeBudget(self.max_steps, self.max_train_seconds, self.max_train_macs)

    @property
    def uses_memory(self) -> bool:
        return self.mode == "replay"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def with_tasks_for(self, n_classes: int) -> "RunConfig":
        """Fill unset task options (published split for TAU-ASC/ESC-50, else five near-equal
        tasks) and check the split against the dataset's `n_classes` classes."""
        n_tasks, n_init, per_task = self.n_tasks, self.n_init_cls, self.n_cls_a_task
        if (n_tasks, n_init, per_task) == (None, None, None) and self.dataset in PUBLISHED_TASKS:
            n_tasks, n_init, per_task = PUBLISHED_TASKS[self.dataset]
        if n_tasks is None:
            n_tasks = min(DEFAULT_N_TASKS, n_classes)
        if n_tasks > n_classes:
            raise EdgeclError(f"--n-tasks: {n_tasks} tasks need at least {n_tasks} classes, the "
                              f"dataset has {n_classes}")
        if per_task is None and n_init is None:
            per_task = n_classes // n_tasks
        elif per_task is None:
            per_task = max(1, (n_classes - n_init) // max(1, n_tasks - 1))
        if n_init is None:
            n_init = n_classes - per_task * (n_tasks - 1)
        needed = n_init + per_task * (n_tasks - 1)
        if needed > n_classes or n_init < 1 or per_task < 1:
            raise EdgeclError(f"--n-tasks/--n-init-cls/--n-cls-a-task: {n_tasks} tasks of "
                              f"{n_init} then {per_task} classes need {needed} classes, the "
                              f"dataset has {n_classes}")
        resolved = replace(self, n_tasks=n_tasks, n_init_cls=n_init, n_cls_a_task=per_task)
        # With --memory-bytes the trainer checks the budget once the exemplar size is known.
        if resolved.uses_memory and resolved.memory_bytes is None and resolved.memory_size < needed:
            raise EdgeclError(f"--memory-size: {resolved.memory_size} exemplars is fewer than the "
                              f"{needed} classes of the run (need at least one per class)")
        return resolved

    def default_exp_name(self) -> str:
        """A name derived from the options that distinguish runs of the published grid."""
        parts = [self.dataset, self.model, self.mode]
        if self.mode == "replay":
            parts.append(self.mem_manage)
            if self.mem_manage == "uncertainty":
                parts += [self.uncert_metric, f"k{self.metric_k}"]
            parts.append(f"m{self.memory_size}" if self.memory_bytes is None
                         else f"b{self.memory_bytes}")
            if self.memory_format != "float32":
                parts.append(self.memory_format)
        if self.dataset == "ESC-50":
            parts.append(f"fold{self.test_fold}")
        parts.append(f"seed{self.seed}")
        return "-".join(parts)

    @property
    def name(self) -> str:
        return self.exp_name or self.default_exp_name()
