"""The run configuration of `edgecl train`: one dataclass, its defaults and its validation.

Defaults follow the published ASC-CL code (replay, memory 500, Adam at 1e-3, batch 32, 30 epochs,
patience 7, seed 3, noisytune with k = 6) except two: the sampler is uncertainty (noisytune, k = 6),
the method this project is built around and ./train.sh's default run (the published code defaults
to prototype), and `noise_lambda` is 0.2 as in the paper's description (the published code: 0.4).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

import click

from edgecl.errors import EdgeclError
from edgecl.limits import (
    MAX_ANALYTIC_EXPANSION,
    MAX_CLIP_SECONDS,
    MAX_DISTILL_TEMPERATURE,
    MAX_DISTILL_WEIGHT,
    MAX_MEMORY_BYTES,
    MAX_STEPS,
    MAX_TRAIN_MACS,
    MAX_TRAIN_SECONDS,
    MAX_VAL_FRACTION,
    Range,
    int_range,
)
from edgecl.options import DatasetName, Option, names_where, options_of_fields, run_field
from edgecl.targets import TARGETS, part_help

MODES = ("finetune", "replay", "joint", "analytic")
DEFAULT_N_TASKS = 5

_LEARNING_RATE = Range(0.0, math.inf, what="a finite learning rate")
_DISTILL_WEIGHT = Range(0.0, MAX_DISTILL_WEIGHT, low_inclusive=True, what="a weight (0 = off)")
# Options that do not change what a run computes (its folder, where and how fast it runs): out
# of its identity and every method, so a run may be resumed with other values of them. `threads`
# does change the last bits of torch's float sums; results.json's provenance records it and a
# resume on another count says so in train.log.
_NOT_IDENTITY = {"identity": False, "method": False}


# Techniques that change later phases' gradient training or trained head (--mode analytic has
# neither).
_LATER_PHASE_TECHNIQUES = ("weight_align", "bias_correction", "distill_output", "distill_feature",
                           "lr_incremental", "ewc_lambda")


def _dataset_help() -> str:
    from edgecl.data import all_aliases

    aliases = sorted(a for a, name in all_aliases().items() if a != name.lower())
    return f"Dataset to learn from (any case; aliases {', '.join(aliases)})."


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

    Each field declares its option (edgecl.options.Option: help, group, choices, range, part of
    the run identity or not); `edgecl train`'s click options, its TOML config file, the grid's
    trial hash and the report's method key are generated from these declarations.

    Names come from the registries: `dataset` (edgecl.data, any alias, stored canonical),
    `model` (models.MODEL_NAMES), `mem_manage` (edgecl.samplers), `memory_format`
    (edgecl.memory.formats). The samplers' own options (e.g. uncert_metric, metric_k,
    noise_lambda) are declared by the samplers: they are keyword arguments of the constructor,
    attributes of the config and top-level keys of `to_dict()`, held in `sampler_options`.
    """

    dataset: str = run_field("synthetic", Option(_dataset_help, "data", type=DatasetName()))
    # Absolute: a relative one is resolved when the config is made.
    data_root: str | None = run_field(None, Option(
        "Dataset folder (ESC-50, TAU-ASC) or manifest CSV (manifest).", "data",
        type=click.Path(), show_default=False))
    # Overrides of the model's rate (manifest, synthetic) and of the clip length.
    sample_rate: int | None = run_field(None, Option(
        "Model sample rate in Hz [dataset's own].", "data", type=int,
        range=int_range("sample_rate"), show_default=False))
    clip_seconds: float | None = run_field(None, Option(
        "Clip length [dataset's own].", "data", type=float, show_default=False,
        range=Range(0.0, MAX_CLIP_SECONDS, what="a clip length in seconds")))
    clips_per_class: int = run_field(100, Option(
        "Size of the generated synthetic dataset.", "data", range=int_range("clips_per_class")))
    model: str = run_field("bc-resnet", Option(None, "model", choices="models:MODEL_NAMES"))
    width: int = run_field(40, Option("BC-ResNet base width (40 = the published c = 4).", "model",
                                      range=int_range("width")))
    # BC-ResNet needs a multiple of 32 log-mel bins; 32 halves the activations.
    n_mels: int = run_field(64, Option(
        "Log-mel bins of the front end (bc-resnet: a multiple of 32; 32 halves every "
        "activation, e.g. to fit a microcontroller's tensor arena).", "model",
        range=int_range("n_mels"), left_out_at_default=True))
    mode: str = run_field("replay", Option(
        "finetune: no memory; replay: memory refilled by --mem-manage; joint: every class in one "
        "phase (upper bound); analytic: phase 0 trained as finetune, then a frozen backbone and "
        "a recursive least-squares head learnt without memory or gradients (ACIL).", "memory",
        choices=MODES))
    # noisytune, k = 6: the method this project is built around.
    mem_manage: str = run_field("uncertainty", Option(
        "Memory sampler (replay).", "memory", choices="edgecl.samplers:sampler_names",
        replay_only=True))
    sampler_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    memory_size: int = run_field(500, Option(
        "Replay memory capacity in exemplars.", "memory", range=int_range("memory_size"),
        replay_only=True))
    memory_format: str = run_field("float32", Option(
        "How exemplars are stored: float32, pcm16 or mulaw8 audio, or logmel8 (8-bit log-mel "
        "with a per-exemplar scale and offset).", "memory",
        choices="edgecl.memory.formats:FORMAT_NAMES", replay_only=True))
    # Device budgets: a byte budget sets the memory's capacity in exemplars of
    # memory_format (memory_size is then unused); compute limits apply to each phase.
    memory_bytes: int | None = run_field(None, Option(
        "Replay memory budget in bytes of stored data, headers included: 512KB, 4MB (x1000), "
        "4MiB (x1024) or plain bytes. Replaces --memory-size. With --mode analytic: the budget "
        "of the head's state (fp32); a bundle's state over it is withheld.", "memory",
        type=click.STRING, metavar="SIZE", show_default=False,
        range=Range(1, MAX_MEMORY_BYTES, integer=True)))
    max_steps: int | None = run_field(None, Option(
        "Compute budget: optimizer steps per phase.", "budget", type=int, show_default=False,
        range=Range(1, MAX_STEPS, integer=True)))
    max_train_seconds: float | None = run_field(None, Option(
        "Compute budget: training wall time per phase.", "budget", type=float,
        show_default=False, range=Range(0.0, MAX_TRAIN_SECONDS, what="a time in seconds")))
    max_train_macs: int | None = run_field(None, Option(
        "Compute budget: training MACs per phase (3 x forward MACs per clip per step), e.g. "
        "500M, 2G, 2e9.", "budget", type=click.STRING, metavar="COUNT", show_default=False,
        range=Range(1, MAX_TRAIN_MACS, integer=True)))
    # The host's training memory (edgecl.budget.host_ram): checked before phase 0. Neither
    # changes what a run computes (checkpointing recomputes the same values), so neither is
    # part of its identity.
    max_train_ram: int | None = run_field(None, Option(
        "Host memory budget: the estimated peak RSS of training (2GB, 3GiB), checked before "
        "phase 0; activation checkpointing is turned on when that brings it under.", "budget",
        type=click.STRING, metavar="SIZE", show_default=False, identity=False, method=False,
        range=Range(1, MAX_MEMORY_BYTES, integer=True)))
    activation_checkpointing: str = run_field("auto", Option(
        "Recompute BC-ResNet's blocks in backward instead of keeping their activations (same "
        "results, more time): on, off, lean (on, and freed memory returned to the system: "
        "the lowest peak, the most time), or auto (the first of off, on, lean that keeps under "
        "--max-train-ram).", "budget", choices=("off", "on", "lean", "auto"), identity=False,
        method=False))
    # Train on new clips passed through a lossy memory_format too (edgecl.items.ClipItems.new_clip).
    code_new_clips: bool = run_field(True, Option(
        "Train on new clips passed through a lossy --memory-format as well, so its artefacts do "
        "not mark the replayed (old) classes.", "memory", replay_only=True))
    # Bias correction after each phase (edgecl.training.weight_align).
    weight_align: bool = run_field(False, Option(
        "Bias correction: after each phase, rescale the new classes' classifier weights to the "
        "old classes' mean norm (weight aligning; no training cost).", "learning"))
    # BiC's correction of the new classes' logits, fit on the validation split after each phase
    # (edgecl.training.bias_correction): off, in-loop or deployed (the phase's model only).
    bias_correction: str = run_field("off", Option(
        "After each phase, map the new classes' logits z to alpha z + beta, fit on the "
        "validation clips of every seen class and folded into the head (BiC): in-loop (the run "
        "goes on from the corrected head) or deployed (only the phase's tested and exported "
        "model; the run goes on uncorrected).", "learning",
        choices="edgecl.training.bias_correction:BIAS_CORRECTIONS", left_out_at_default=True))
    # The analytic head of --mode analytic (edgecl.steps.analytic).
    analytic_gamma: float | None = run_field(None, Option(
        "Ridge regulariser of the analytic head (--mode analytic) [chosen on a held-out share "
        "of phase 0's training clips].", "learning", type=float, metavar="GAMMA",
        show_default=False, left_out_at_default=True,
        range=Range(0.0, math.inf, what="a positive regulariser")))
    analytic_weighting: str = run_field("balanced", Option(
        "Class weighting of the analytic head (--mode analytic): balanced gives each class "
        "learnt the mean class's mass, so a class learnt from few clips is still predicted; "
        "boosted gives a class with fewer clips than the mean class more (its clips' weight is "
        "balanced's to the power 1.25), as a ridge fit on few clips under-scores clips it has "
        "not seen; off weighs every clip 1.", "learning", choices=("off", "balanced", "boosted"),
        left_out_at_default=True))
    analytic_expansion: int = run_field(0, Option(
        "Width B of a fixed random ReLU expansion of the standardised embedding before the "
        "analytic head (--mode analytic; 0 = none): a projection drawn from --seed; the state "
        "grows to (B + 1)^2 / 2 + D B numbers and the C update does not run it.", "learning",
        metavar="B", range=Range(0, MAX_ANALYTIC_EXPANSION, integer=True),
        left_out_at_default=True))
    # Distillation from the previous phase's model (edgecl.training.distill): weights 0 = off.
    distill_output: float = run_field(0.0, Option(
        "Output distillation weight: KL divergence (x T^2) between the previous phase's frozen "
        "model and this one on the old classes' logits (0 = off).", "learning", metavar="W",
        range=_DISTILL_WEIGHT))
    distill_feature: float = run_field(0.0, Option(
        "Feature distillation weight: 1 - cosine similarity of the previous phase's and this "
        "model's embeddings (0 = off).", "learning", metavar="W", range=_DISTILL_WEIGHT))
    distill_temperature: float = run_field(2.0, Option(
        "Temperature of output distillation.", "learning", metavar="T",
        range=Range(0.0, MAX_DISTILL_TEMPERATURE, what="a temperature")))
    distill_adaptive: bool = run_field(False, Option(
        "Scale the distillation weights by the share of old classes (old / seen).", "learning"))
    # Class-balanced fine-tuning after each phase (edgecl.training.balanced_finetune): 0 = off.
    balanced_epochs: int = run_field(0, Option(
        "Class-balanced fine-tuning after each phase (replay, phase >= 1): E epochs on the "
        "memory's old-class exemplars plus as many new clips per new class (0 = off).",
        "learning", metavar="E", range=int_range("balanced_epochs"), left_out_at_default=True,
        replay_only=True))
    balanced_lr: float = run_field(1e-4, Option(
        "Adam learning rate of the class-balanced fine-tuning.", "learning", metavar="LR",
        range=_LEARNING_RATE, left_out_at_default=True, replay_only=True))
    # How a phase draws its batches from new clips and exemplars
    # (edgecl.training.batch_sampling): uniform (published), class-balanced, square-root or
    # progressive.
    batch_sampling: str = run_field("uniform", Option(
        "How a phase draws its batches (replay): uniform (each clip once an epoch, the published "
        "rule), class-balanced (every seen class the same share of each batch, exemplars "
        "repeated), square-root (shares by the square root of a class's clips) or progressive "
        "(uniform in the first epoch to class-balanced in the last); the same steps in every "
        "case.", "learning", choices="edgecl.training.batch_sampling:BATCH_SAMPLINGS",
        left_out_at_default=True, replay_only=True))
    # Augmentation of each training batch (edgecl.training.augment): none or specaugment.
    augment: str = run_field("none", Option(
        "Augment each training batch: specaugment masks one band of mel bins and one span of "
        "frames per clip (up to an eighth of each).", "learning",
        choices="edgecl.training.augment:AUGMENTS", left_out_at_default=True))
    # Share of each task's training clips held out for model selection (edgecl.tasks).
    val_fraction: float = run_field(0.1, Option(
        "Share of each task's training clips held out for model selection, in [0, 0.9] (best "
        "epoch: highest validation accuracy, ties broken by lower validation loss).", "data",
        metavar="F", range=Range(0.0, MAX_VAL_FRACTION, low_inclusive=True,
                                 what="a fraction of each task's training clips")))
    n_tasks: int | None = run_field(None, Option(
        "Number of tasks [TAU-ASC 5, ESC-50 5, else min(5, classes)].", "data", type=int,
        show_default=False, range=int_range("n_tasks")))
    n_init_cls: int | None = run_field(None, Option(
        "Classes in the first task [TAU-ASC 2, ESC-50 10, else an even split].", "data",
        type=int, show_default=False, range=int_range("n_init_cls")))
    n_cls_a_task: int | None = run_field(None, Option(
        "Classes in each later task [TAU-ASC 2, ESC-50 10, else an even split].", "data",
        type=int, show_default=False, range=int_range("n_cls_a_task")))
    # Few-shot phases (edgecl.tasks): K training clips per new class after phase 0.
    shots: int | None = run_field(None, Option(
        "Few-shot phases: in phases >= 1, train on K clips per new class, drawn by --seed from "
        "those left after the validation hold-out (a class with fewer keeps all; phase 0 keeps "
        "all; not with --mode joint) [all clips].", "data", type=int, metavar="K", show_default=False,
        range=int_range("shots"), left_out_at_default=True))
    seed: int = run_field(3, Option(None, "run", method=False, range=int_range("seed")))
    epochs: int = run_field(30, Option("Maximum epochs per phase.", "learning",
                                       range=int_range("epochs")))
    batch_size: int = run_field(32, Option(None, "learning", range=int_range("batch_size")))
    lr: float = run_field(1e-3, Option("Adam learning rate.", "learning", range=_LEARNING_RATE))
    # Adam learning rate of phases >= 1 (None: --lr): a smaller step moves the features the old
    # classes rely on less while the new classes are learned.
    lr_incremental: float | None = run_field(None, Option(
        "Adam learning rate of phases >= 1 (a smaller step forgets less) [--lr].", "learning",
        type=float, metavar="LR", show_default=False, range=_LEARNING_RATE,
        left_out_at_default=True))
    patience: int = run_field(7, Option(
        "Early-stopping patience in epochs on the validation split (0 = off).", "learning",
        range=int_range("patience")))
    # Clips whose forward pass re-estimates BatchNorm statistics after every epoch (0 = off);
    # edgecl.training.loop.recalibrate_batchnorm.
    bn_recal_clips: int = run_field(1024, Option(
        "Training clips (evenly spaced) whose forward pass re-estimates BatchNorm statistics "
        "after each epoch; fewer is faster (0 = off).", "learning",
        range=int_range("bn_recal_clips"), left_out_at_default=True))
    test_fold: int = run_field(1, Option("ESC-50 test fold.", "data", type=click.IntRange(1, 5),
                                         method=False))
    workspace: str = run_field("workspace", Option(
        None, "run", type=click.Path(file_okay=False), **_NOT_IDENTITY))
    exp_name: str | None = run_field(None, Option(
        "Run folder name under the workspace [derived from the options].", "run", type=str,
        show_default=False, **_NOT_IDENTITY))
    export: bool = run_field(True, Option("Export each phase's model for the device.", "export"))
    # Device targets of the export: onnx (fp32 + int8 ONNX), or tflm (those plus the TFLM build).
    target: str = run_field("onnx", Option(
        "Device export: onnx (fp32 and int8 ONNX per phase) or tflm (those plus an int8 "
        "TensorFlow Lite Micro build with a C front end; needs pip install 'edgecl[tflm]').",
        "export", choices=TARGETS, left_out_at_default=True))
    # Window of the TFLM build in seconds (firmware_export.device.windows): None = auto (1 s
    # windows for clips longer than 1 s), 0 = the whole clip.
    tflm_window_seconds: float | None = run_field(None, Option(
        "Window of the TFLM build: the device runs the model on windows of this length and "
        "averages their logits over the clip; 0 = the whole clip. [auto: 1 s windows for clips "
        "longer than 1 s, else the whole clip] (--target tflm)", "export", type=float,
        metavar="SECONDS", show_default=False, left_out_at_default=True,
        range=Range(0.0, MAX_CLIP_SECONDS, low_inclusive=True,
                    what="a window length in seconds (0 = whole clip)")))
    # The TFLM build's deployment budget in bytes (firmware_export.tflm.limits): checked on the
    # untrained model before phase 0 and on each phase's build (over a limit: withheld).
    arena_limit: int | None = run_field(None, Option(
        "Most TFLM arena bytes the part gives the model (256KB, 256KiB): checked on the "
        "untrained model before training and on each phase's build (--target tflm).", "export",
        type=click.STRING, metavar="SIZE", show_default=False, left_out_at_default=True))
    flash_limit: int | None = run_field(None, Option(
        "Most TFLM flatbuffer bytes the part gives the model (1MB): checked like --arena-limit "
        "(--target tflm).", "export", type=click.STRING, metavar="SIZE", show_default=False,
        left_out_at_default=True))
    # A named target part (edgecl.targets.PARTS): the defaults of the two limits above, which
    # it sets in the config (so the limits, not the name, are the run's identity).
    part: str | None = run_field(None, Option(
        part_help, "export", choices="edgecl.targets:PART_NAMES", show_default=False,
        **_NOT_IDENTITY))
    feature_cache: bool = run_field(True, Option(
        "Compute each clip's log-mel once (off only to measure it).", "run"))
    # Keep each clip's log-mel in WORKSPACE/features/ for later runs (edgecl.feature_store).
    feature_store: bool = run_field(True, Option(
        "Keep each clip's log-mel features in WORKSPACE/features/, shared by every run of the "
        "workspace, so a later run over the same files computes none.", "run", **_NOT_IDENTITY))
    device: str = run_field("auto", Option(  # edgecl.device
        "Where to train and update the memory: cuda when available (auto), cpu or cuda.", "run",
        choices="edgecl.device:DEVICES", **_NOT_IDENTITY))
    # TF32 matmuls and convolutions on a GPU: faster, not bit-reproducible (edgecl.device).
    allow_tf32: bool = run_field(False, Option(
        "On a GPU, let matmuls and convolutions use TF32 (faster; results are then not "
        "reproducible bit for bit and differ from float32).", "run", left_out_at_default=True))
    # Number format of the training forward (edgecl.precision): fp32, bf16 or auto (bf16 where
    # the hardware runs it natively); a run records the resolved value.
    precision: str = run_field("fp32", Option(
        "Training forward in float32, or the backbone and head in bfloat16 under autocast (front "
        "end, loss, weights and optimizer stay float32; exports come from float32 weights); "
        "auto: bf16 where the CPU (AVX-512 BF16, AMX) or GPU runs it natively, else fp32.",
        "run", choices="edgecl.precision:PRECISIONS", left_out_at_default=True))
    threads: int = run_field(2, Option("CPU threads for torch.", "run", range=int_range("threads"),
                                       **_NOT_IDENTITY))
    quiet: bool = run_field(False, Option("No progress bars or log lines on stderr.", "run",
                                          flag="on", **_NOT_IDENTITY))

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
        """Normalise values given in other spellings, check each option against its declared
        choices and range, then the rules between options."""
        self._normalise()
        self.compute_budget()  # a compute limit must be positive (said before its range)
        for name, option in field_options().items():
            option.check(getattr(self, name))
        for name, option in declared_options().items():
            option.check(self.sampler_options[name])
        self._check_rules()

    def _normalise(self) -> None:
        from edgecl.budget.units import parse_bytes, parse_count
        from edgecl.data import canonical_name
        from edgecl.data.fingerprint import absolute_data_root
        from edgecl.targets import PARTS, part_limits

        object.__setattr__(self, "dataset", canonical_name(self.dataset))
        object.__setattr__(self, "data_root", absolute_data_root(self.data_root))
        if isinstance(self.bias_correction, bool):  # a flag before `deployed` existed
            object.__setattr__(self, "bias_correction",
                               "in-loop" if self.bias_correction else "off")
        for name in ("arena_limit", "flash_limit"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, parse_bytes(getattr(self, name), option_name(name)))
        arena, flash = part_limits(self.part if self.part in PARTS else None,  # else: check
                                   self.arena_limit, self.flash_limit)
        object.__setattr__(self, "arena_limit", arena)
        object.__setattr__(self, "flash_limit", flash)
        if self.memory_bytes is not None:  # "4MB" from Python callers too; stored as an int
            object.__setattr__(self, "memory_bytes", parse_bytes(self.memory_bytes))
        if self.max_train_ram is not None:
            object.__setattr__(self, "max_train_ram",
                               parse_bytes(self.max_train_ram, "--max-train-ram"))
        if self.max_train_macs is not None:
            object.__setattr__(self, "max_train_macs",
                               parse_count(self.max_train_macs, "--max-train-macs"))

    def _check_rules(self) -> None:
        """The rules between options (each option's own values are checked by its Option)."""
        for name in ("tflm_window_seconds", "part", "arena_limit", "flash_limit"):
            if getattr(self, name) is not None and self.target != "tflm":
                raise EdgeclError(f"{option_name(name)}: only used with --target tflm")
        if self.model == "bc-resnet":
            from models import BC_RESNET_N_MELS_MULTIPLE as multiple

            if self.n_mels % multiple:
                raise EdgeclError(f"--n-mels: bc-resnet needs a multiple of {multiple} "
                                  f"(SubSpectralNorm's bands after the frequency strides), got "
                                  f"{self.n_mels}")
        if self.memory_bytes is not None and self.mode not in ("replay", "analytic"):
            raise EdgeclError(f"--memory-bytes: only used with --mode replay (the memory's "
                              f"budget) or analytic (the head's state's); this run is --mode "
                              f"{self.mode}, without a memory")
        if self.shots is not None and self.mode == "joint":
            raise EdgeclError("--shots: joint mode learns every class in phase 0, which keeps "
                              "all its clips; use --mode finetune or replay")
        self._check_analytic()
        if self.dataset != "synthetic" and not self.data_root:
            raise EdgeclError(f"--data-root: required for --dataset {self.dataset}")

    def _check_analytic(self) -> None:
        """The analytic head's options need --mode analytic; that mode trains by gradient only in
        phase 0, so techniques acting on later phases' training or head are refused with it."""
        if self.mode != "analytic":
            for name in ("analytic_gamma", "analytic_weighting", "analytic_expansion"):
                if getattr(self, name) != field_options()[name].default:
                    raise EdgeclError(f"{option_name(name)}: only used with --mode analytic")
            return
        changed = [name for name in _LATER_PHASE_TECHNIQUES
                   if getattr(self, name) != run_options()[name].default]
        if changed:
            raise EdgeclError(f"{', '.join(option_name(n) for n in changed)}: not used with "
                              f"--mode analytic (phases >= 1 learn the analytic head, without "
                              f"gradient training)")

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
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)} | set(declared_options())
        return cls(**{k: v for k, v in values.items() if k in known})

    def with_tasks_for(self, n_classes: int) -> RunConfig:
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
        a run folder holds one run of one identity (edgecl.run_owner). Options declared
        `left_out_at_default` are left out at their default, so runs from before them keep
        their identity and name."""
        left_out = identity_defaults_left_out()
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
        if self.shots is not None:
            parts.append(f"shots{self.shots}")
        parts.append(f"seed{self.seed}")
        parts.append(self.identity_hash())
        return "-".join(parts)

    @property
    def name(self) -> str:
        return self.exp_name or self.default_exp_name()


@functools.cache
def field_options() -> dict[str, Option]:
    """RunConfig's declared options by field name, in field order."""
    return options_of_fields(RunConfig)


def run_options() -> dict[str, Option]:
    """Every option of a run: RunConfig's fields, the samplers' options after --mem-manage and
    the steps' after --augment (a step's option is left out of the identity at its default)."""
    from edgecl.samplers import option_owners, sampler_options
    from edgecl.steps import step_options

    options: dict[str, Option] = {}
    for name, option in field_options().items():
        options[name] = option
        if name == "mem_manage":
            options.update({own: declared.as_option(
                f"{declared.help} (--mem-manage {', '.join(option_owners(own))})", "memory",
                replay_only=True) for own, declared in sampler_options().items()})
        if name == "augment":
            options.update({own: replace(declared.as_option(declared.help, "learning"),
                                         left_out_at_default=True)
                            for own, declared in step_options().items()})
    return options


# Options of `edgecl train` that are not part of a run's config.
COMMAND_OPTIONS = {option.name: option for option in (
    Option("TOML file of these options (keys as option names: mem-manage = \"uncertainty\"); "
           "flags given here override it. Every run writes its own as RUN/config.toml.", "run",
           type=click.Path(dir_okay=False), show_default=False).bound("config", None),
    Option("Delete what the run folder holds and run again (by default a rerun with the same "
           "options resumes or skips the run, and a folder holding another run is an error).",
           "run", flag="on", show_default=False).bound("overwrite", False),
)}


def train_options() -> dict[str, Option]:
    """Every option of `edgecl train`: the run's, then the command's own."""
    return {**run_options(), **COMMAND_OPTIONS}


# Options that do not change what a run computes: left out of its identity (run.json, the hash
# in its default name, the grid's trial hash), so a run may be resumed with other values of them.
NOT_IDENTITY = names_where(field_options(), lambda option: not option.identity)


def identity_defaults_left_out() -> dict[str, Any]:
    """Options added after runs existed, with the default at which they are left out of a
    run's identity (so older runs keep their identity and name)."""
    return {name: option.default for name, option in run_options().items()
            if option.left_out_at_default}


def memory_options() -> tuple[str, ...]:
    """Options used only with --mode replay: the memory's and every sampler's options."""
    return names_where(run_options(), lambda option: option.replay_only)
