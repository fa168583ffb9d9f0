"""The run configuration of `edgecl train`: one dataclass, its defaults and its validation.

Defaults follow the published ASC-CL code (replay, memory 500, Adam at 1e-3, batch 32, 30 epochs,
patience 7, seed 3, noisytune with k = 6) except two: the sampler is uncertainty (noisytune, k = 6),
the method this project is built around and ./train.sh's default run (the published code defaults
to prototype), and `noise_lambda` is 0.2 as in the paper's description (the published code: 0.4).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from edgecl.errors import EdgeclError
from edgecl.limits import (INT_RANGES, MAX_CLIP_SECONDS, MAX_DISTILL_TEMPERATURE,
                           MAX_DISTILL_WEIGHT, MAX_MEMORY_BYTES, MAX_STEPS, MAX_TRAIN_MACS,
                           MAX_TRAIN_SECONDS, MAX_VAL_FRACTION, check_float, check_int)

MODES = ("finetune", "replay", "joint")

# Options that only make sense with a replay memory (every sampler's own options too, see
# memory_options()).
_MEMORY_FIELDS = ("mem_manage", "memory_size", "memory_bytes", "memory_format", "code_new_clips",
                  "balanced_epochs", "balanced_lr", "batch_sampling")
DEFAULT_N_TASKS = 5
# Options that do not change the experiment: left out of its identity (run.json, the hash in its
# default name), so a run may be resumed with other values of them. `threads` does change the last
# bits of torch's float sums; results.json's provenance records it and a resume on another count
# says so in train.log.
NOT_IDENTITY = ("workspace", "exp_name", "threads", "quiet", "feature_store", "device")
# Options added after runs existed: at these defaults they are left out of a run's identity, so
# older runs keep their identity and name.
IDENTITY_DEFAULTS_LEFT_OUT = {"target": "onnx", "n_mels": 64, "bn_recal_clips": 1024,
                             "tflm_window_seconds": None, "arena_limit": None,
                             "flash_limit": None, "balanced_epochs": 0,
                             "balanced_lr": 1e-4, "uncert_trim": 0.0, "uncert_ties": "random",
                             "batch_sampling": "uniform", "lr_incremental": None,
                             "augment": "none", "bias_correction": "off", "allow_tf32": False,
                             "precision": "fp32"}


def memory_options() -> tuple[str, ...]:
    """Config fields used only with --mode replay: the memory's and every sampler's options."""
    from edgecl.samplers import sampler_options

    return _MEMORY_FIELDS + tuple(sampler_options())


def declared_options() -> dict:
    """Options declared by the samplers and the steps (edgecl.samplers, edgecl.steps) rather
    than as RunConfig fields, by name."""
    from edgecl.samplers import sampler_options
    from edgecl.steps import step_options

    return {**sampler_options(), **step_options()}


def option_name(field_name: str) -> str:
    """The CLI spelling of a config field: memory_size -> --memory-size."""
    return "--" + field_name.replace("_", "-")


@dataclass(frozen=True, init=False)
class RunConfig:
    """Every option of one continual-learning run (recorded in results.json as `config`).

    Names come from the registries: `dataset` (edgecl.data, any alias, stored canonical),
    `model` (models.MODEL_NAMES), `mem_manage` (edgecl.samplers), `memory_format`
    (edgecl.memory.formats). The samplers' own options (e.g. uncert_metric, metric_k,
    noise_lambda) are declared by the samplers, and the steps' own options by the steps
    (edgecl.steps): they are keyword arguments of the constructor, attributes of the config and
    top-level keys of `to_dict()`, held in `sampler_options`.
    """

    dataset: str = "synthetic"
    data_root: str | None = None  # absolute: a relative one is resolved when the config is made
    sample_rate: int | None = None  # override the model's rate (manifest, synthetic)
    clip_seconds: float | None = None  # override the clip length
    clips_per_class: int = 100  # synthetic dataset size
    model: str = "bc-resnet"
    width: int = 40
    n_mels: int = 64  # log-mel bins (BC-ResNet needs a multiple of 32; 32 halves the activations)
    mode: str = "replay"
    mem_manage: str = "uncertainty"  # noisytune, k = 6: the method this project is built around
    sampler_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    memory_size: int = 500
    memory_format: str = "float32"
    # Device budgets: a byte budget sets the memory's capacity in exemplars of
    # memory_format (memory_size is then unused); compute limits apply to each phase.
    memory_bytes: int | None = None
    max_steps: int | None = None
    max_train_seconds: float | None = None
    max_train_macs: int | None = None
    # Train on new clips passed through a lossy memory_format too (edgecl.items.ClipItems.new_clip).
    code_new_clips: bool = True
    # Bias correction after each phase (edgecl.training.weight_align).
    weight_align: bool = False
    # BiC's correction of the new classes' logits, fit on the validation split after each phase
    # (edgecl.training.bias_correction): off, in-loop or deployed (the phase's model only).
    bias_correction: str = "off"
    # Distillation from the previous phase's model (edgecl.training.distill): weights 0 = off.
    distill_output: float = 0.0
    distill_feature: float = 0.0
    distill_temperature: float = 2.0
    distill_adaptive: bool = False
    # Class-balanced fine-tuning after each phase (edgecl.training.balanced_finetune): 0 = off.
    balanced_epochs: int = 0
    balanced_lr: float = 1e-4
    # How a phase draws its batches from new clips and exemplars
    # (edgecl.training.batch_sampling): uniform (published), class-balanced, square-root or
    # progressive.
    batch_sampling: str = "uniform"
    # Augmentation of each training batch (edgecl.training.augment): none or specaugment.
    augment: str = "none"
    # Share of each task's training clips held out for model selection (edgecl.tasks).
    val_fraction: float = 0.1
    n_tasks: int | None = None
    n_init_cls: int | None = None
    n_cls_a_task: int | None = None
    seed: int = 3
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    # Adam learning rate of phases >= 1 (None: --lr): a smaller step moves the features the old
    # classes rely on less while the new classes are learned.
    lr_incremental: float | None = None
    patience: int = 7
    # Clips whose forward pass re-estimates BatchNorm statistics after every epoch (0 = off);
    # edgecl.training.loop.recalibrate_batchnorm.
    bn_recal_clips: int = 1024
    test_fold: int = 1
    workspace: str = "workspace"
    exp_name: str | None = None
    export: bool = True
    # Device targets of the export: onnx (fp32 + int8 ONNX), or tflm (those plus the TFLM build).
    target: str = "onnx"
    # Window of the TFLM build in seconds (firmware_export.device.windows): None = auto (1 s
    # windows for clips longer than 1 s), 0 = the whole clip.
    tflm_window_seconds: float | None = None
    # The TFLM build's deployment budget in bytes (firmware_export.tflm.limits): checked on the
    # untrained model before phase 0 and on each phase's build (over a limit: withheld).
    arena_limit: int | None = None
    flash_limit: int | None = None
    feature_cache: bool = True
    # Keep each clip's log-mel in WORKSPACE/features/ for later runs (edgecl.feature_store).
    feature_store: bool = True
    device: str = "auto"  # auto, cpu or cuda (edgecl.device)
    # TF32 matmuls and convolutions on a GPU: faster, not bit-reproducible (edgecl.device).
    allow_tf32: bool = False
    # Number format of the training forward (edgecl.precision): fp32, bf16 or auto (bf16 where
    # the hardware runs it natively); a run records the resolved value.
    precision: str = "fp32"
    threads: int = 2
    quiet: bool = False

    def __init__(self, **values: Any) -> None:
        declared = declared_options()
        given = dict(values.pop("sampler_options", None) or {})
        given.update({name: values.pop(name) for name in list(values) if name in declared})
        unknown = sorted(set(values) - {f.name for f in fields(self)})
        if unknown or set(given) - set(declared):
            raise TypeError(f"RunConfig: unknown options {unknown or sorted(set(given) - set(declared))}")
        for f in fields(self):
            if f.name == "sampler_options":
                value = {name: given.get(name, option.default) for name, option in declared.items()}
            elif f.name in values:
                value = values[f.name]
            else:
                value = f.default if f.default_factory is MISSING else f.default_factory()
            object.__setattr__(self, f.name, value)
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("sampler_options") or {}
        if name in options:
            return options[name]
        raise AttributeError(f"RunConfig has no option {name!r}")

    def __post_init__(self) -> None:
        from edgecl.data import canonical_name
        from edgecl.memory.formats import get_format
        from edgecl.samplers import sampler_class
        from models import MODEL_NAMES

        from edgecl.data.fingerprint import absolute_data_root

        object.__setattr__(self, "dataset", canonical_name(self.dataset))
        object.__setattr__(self, "data_root", absolute_data_root(self.data_root))
        if isinstance(self.bias_correction, bool):  # a flag before `deployed` existed
            object.__setattr__(self, "bias_correction",
                               "in-loop" if self.bias_correction else "off")
        from edgecl.device import DEVICES

        from firmware_export.device.layout import TARGETS

        from edgecl.training.augment import AUGMENTS
        from edgecl.training.batch_sampling import BATCH_SAMPLINGS
        from edgecl.precision import PRECISIONS
        from edgecl.training.bias_correction import BIAS_CORRECTIONS

        for name, allowed in (("model", MODEL_NAMES), ("mode", MODES), ("device", DEVICES),
                              ("target", TARGETS), ("batch_sampling", BATCH_SAMPLINGS),
                              ("augment", AUGMENTS), ("bias_correction", BIAS_CORRECTIONS),
                              ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise EdgeclError(f"{option_name(name)}: expected one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        sampler_class(self.mem_manage)
        get_format(self.memory_format)
        for name, option in declared_options().items():
            option.check(self.sampler_options[name])
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name, None)
            if value is not None:
                check_int(option_name(name), value, low, high)
        if self.clip_seconds is not None:
            check_float("--clip-seconds", self.clip_seconds, 0.0, MAX_CLIP_SECONDS,
                        what="a clip length in seconds")
        if self.tflm_window_seconds is not None:
            check_float("--tflm-window-seconds", self.tflm_window_seconds, 0.0, MAX_CLIP_SECONDS,
                        low_inclusive=True, what="a window length in seconds (0 = whole clip)")
            if self.target != "tflm":
                raise EdgeclError("--tflm-window-seconds: only used with --target tflm")
        check_float("--lr", self.lr, 0.0, math.inf, what="a finite learning rate")
        if self.lr_incremental is not None:
            check_float("--lr-incremental", self.lr_incremental, 0.0, math.inf,
                        what="a finite learning rate")
        for name in ("distill_output", "distill_feature"):
            check_float(option_name(name), getattr(self, name), 0.0, MAX_DISTILL_WEIGHT,
                        low_inclusive=True, what="a weight (0 = off)")
        check_float("--distill-temperature", self.distill_temperature, 0.0,
                    MAX_DISTILL_TEMPERATURE, what="a temperature")
        check_float("--balanced-lr", self.balanced_lr, 0.0, math.inf,
                    what="a finite learning rate")
        check_float("--val-fraction", self.val_fraction, 0.0, MAX_VAL_FRACTION,
                    low_inclusive=True, what="a fraction of each task's training clips")
        if self.model == "bc-resnet":
            from models import BC_RESNET_N_MELS_MULTIPLE as multiple

            if self.n_mels % multiple:
                raise EdgeclError(f"--n-mels: bc-resnet needs a multiple of {multiple} "
                                  f"(SubSpectralNorm's bands after the frequency strides), got "
                                  f"{self.n_mels}")
        self._check_budgets()
        if self.dataset != "synthetic" and not self.data_root:
            raise EdgeclError(f"--data-root: required for --dataset {self.dataset}")

    def _check_budgets(self) -> None:
        from edgecl.budget.units import parse_bytes, parse_count

        for name in ("arena_limit", "flash_limit"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, parse_bytes(getattr(self, name), option_name(name)))
                if self.target != "tflm":
                    raise EdgeclError(f"{option_name(name)}: only used with --target tflm")
        if self.memory_bytes is not None:  # "4MB" from Python callers too; stored as an int
            object.__setattr__(self, "memory_bytes", parse_bytes(self.memory_bytes))
        if self.max_train_macs is not None:
            object.__setattr__(self, "max_train_macs",
                               parse_count(self.max_train_macs, "--max-train-macs"))
        self.compute_budget()  # validates the limits are positive
        if self.memory_bytes is not None:
            check_int("--memory-bytes", self.memory_bytes, 1, MAX_MEMORY_BYTES)
        if self.max_steps is not None:
            check_int("--max-steps", self.max_steps, 1, MAX_STEPS)
        if self.max_train_macs is not None:
            check_int("--max-train-macs", self.max_train_macs, 1, MAX_TRAIN_MACS)
        if self.max_train_seconds is not None:
            check_float("--max-train-seconds", self.max_train_seconds, 0.0, MAX_TRAIN_SECONDS,
                        what="a time in seconds")

    def phase_lr(self, phase: int) -> float:
        """Adam's learning rate in `phase`: --lr in phase 0, --lr-incremental (if set) after."""
        return self.lr if phase == 0 or self.lr_incremental is None else self.lr_incremental

    def compute_budget(self):
        """The per-phase edgecl.training.stop.ComputeBudget of this run."""
        from edgecl.training.stop import ComputeBudget

        return ComputeBudget(self.max_steps, self.max_train_seconds, self.max_train_macs)

    @property
    def uses_memory(self) -> bool:
        return self.mode == "replay"

    def to_dict(self) -> dict[str, Any]:
        """Every option by name, the samplers' options in place of `sampler_options`."""
        values: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "sampler_options":
                values.update(self.sampler_options)
            else:
                values[f.name] = getattr(self, f.name)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)} | set(declared_options())
        return cls(**{k: v for k, v in values.items() if k in known})

    def with_tasks_for(self, n_classes: int) -> "RunConfig":
        """Fill unset task options (published split for TAU-ASC/ESC-50, else five near-equal
        tasks) and check the split against the dataset's `n_classes` classes."""
        n_tasks, n_init, per_task = self.n_tasks, self.n_init_cls, self.n_cls_a_task
        from edgecl.data import dataset_entry

        published = dataset_entry(self.dataset).published_tasks
        if (n_tasks, n_init, per_task) == (None, None, None) and published:
            n_tasks, n_init, per_task = published
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

    def identity(self) -> dict[str, Any]:
        """Every option that can change what the run computes (`to_dict()` minus NOT_IDENTITY):
        a run folder holds one run of one identity (edgecl.run_owner). Options at their
        IDENTITY_DEFAULTS_LEFT_OUT value, and the steps' own options at their default, are left
        out, so runs from before them keep their identity and name."""
        from edgecl.steps import step_options

        left_out = {**IDENTITY_DEFAULTS_LEFT_OUT,
                    **{name: option.default for name, option in step_options().items()}}
        return {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY
                and not (k in left_out and v == left_out[k])}

    def identity_hash(self, length: int = 8) -> str:
        """Short stable hash of `identity()`."""
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:length]

    def default_exp_name(self) -> str:
        """A readable name from the options that distinguish runs of the published grid, then a
        short hash of every option that changes results (so runs that differ never collide)."""
        parts = [self.dataset, self.model, self.mode]
        if self.mode == "replay":
            from edgecl.samplers import sampler_class

            parts.append(self.mem_manage)
            parts += sampler_class(self.mem_manage).run_name_parts(self.sampler_options)
            parts.append(f"m{self.memory_size}" if self.memory_bytes is None
                         else f"b{self.memory_bytes}")
            if self.memory_format != "float32":
                parts.append(self.memory_format)
        if self.dataset == "ESC-50":
            parts.append(f"fold{self.test_fold}")
        parts.append(f"seed{self.seed}")
        parts.append(self.identity_hash())
        return "-".join(parts)

    @property
    def name(self) -> str:
        return self.exp_name or self.default_exp_name()
