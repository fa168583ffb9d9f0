"""One phase's TFLM build: convert, quantize, finish, then verify it in TFLM's own interpreter.

Checks, in order: every operator int8 (a float operator withholds the build), the arena TFLM
needs (found by allocating), and parity against the fp32 ONNX model on the phase's held-out clips
through the int8 rule of firmware_export.parity (a miss withholds the build with its reason; the
ONNX artifacts are unaffected). The model runs on the log-mel of the C-equivalent numpy front end,
so parity covers the front end the device runs too. Calibration uses the clips the int8 ONNX
build uses (every window of them). A shipped build also gets its embedding model
(firmware_export.tflm.embedding_build), with the same checks and its own verdict.

Windowed builds (firmware_export.device.windows: by default 1 s windows for clips longer than
1 s): the model takes one window; the device runs the front end and the model per window and
averages the dequantized logits over the clip's windows. The verdict keeps the two costs apart:
int8's own cost is TFLM against the fp32 network run the same way on the windows (PyTorch, which
matches the fp32 ONNX model to 1e-3), under the whole int8 rule; the window's cost is the pooled
TFLM score against the fp32 ONNX model on the whole clip, under the rule's accuracy half only (a
significant drop of more than a point), since windows flip near-tied clips either way without
losing accuracy. The manifest records all three comparisons (`parity_vs_fp32` is the device
against the whole clip).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecl.budget.ram import rss_stage
from firmware_export import parity
from firmware_export.device.layout import (
    FRONTEND_HEADER,
    FRONTEND_SOURCE,
    MODEL_TFLM,
    TFLM_HEADER,
    TFLM_TEST_VECTORS,
)
from firmware_export.device.logmel import LogMelPlan, logmel
from firmware_export.device.tflm_runtime import (
    HeadedMicroModel,
    MicroModel,
    clip_logits,
    find_arena,
)
from firmware_export.device.windows import describe, pool, split_windows, window_samples
from firmware_export.tflm import flatbuffer, toolchain_versions
from firmware_export.tflm.c_frontend import render_frontend
from firmware_export.tflm.c_model import render_model_header, render_test_vectors
from firmware_export.tflm.convert import float_tflite
from firmware_export.tflm.converter_process import ConverterProcess
from firmware_export.tflm.limits import DeviceLimits, limit_failures
from firmware_export.tflm.quantize import KeptRanges, int8_tflite
from firmware_export.tflm.recipes import RECIPES, TflmRecipe, named_outputs, sixteen_bit_scopes
from firmware_export.tflm.rewrite import tflm_graph


@dataclass
class TflmBuild:
    """The build's bytes, its manifest section and the bundle files it adds (none if withheld)."""

    model: bytes
    section: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    embedding: TflmBuild | None = None  # the embedding model's build, when it was built

    @property
    def shipped(self) -> bool:
        return self.section["status"] == "shipped"


class WindowLogMels:
    """The front end's log-mel of each window a phase's TFLM builds use, computed once (the
    numpy front end costs more than twice what TFLM's run of a window does): the calibration
    windows of both conversions, the held-out windows of both parity checks and of the
    embedding's agreement. Kept by a hash of the window's bytes; `computed` counts the log-mels
    made."""

    def __init__(self, plan: LogMelPlan) -> None:
        self.plan = plan
        self._kept: dict[bytes, np.ndarray] = {}
        self.computed = 0

    def __call__(self, window: np.ndarray) -> np.ndarray:
        key = parity.array_key(window)
        if key not in self._kept:
            self.computed += 1
            self._kept[key] = logmel(self.plan, window)
        return self._kept[key]


def convert_tflite(model: nn.Module, plan: LogMelPlan, calibration_waveforms: np.ndarray,
                   fold_norms: bool = True, head: bool = True,
                   front_end: Callable[[np.ndarray], np.ndarray] | None = None,
                   recipe: TflmRecipe = RECIPES[0]) -> bytes:
    """The finished .tflite of `model` (a SoundClassifier, eval mode) under `recipe` (all int8
    by default); without `head`, of its embedding (the model cut before its classifier).
    `front_end(window)` gives a window's log-mel (default: logmel with `plan`)."""
    features = front_end or (lambda window: logmel(plan, window))
    calibration = calibration_logmels(features, calibration_waveforms)
    graph = tflm_graph(model, fold_norms, head)
    float_model = float_tflite(graph, torch.from_numpy(calibration[:1]))
    return quantize_recipe(recipe, float_model, calibration)


def calibration_logmels(front_end: Callable[[np.ndarray], np.ndarray],
                        waveforms: np.ndarray) -> np.ndarray:
    """`front_end`'s log-mel of each calibration window [N, 1, n_mels, frames]."""
    return np.stack([front_end(clip) for clip in waveforms])[:, None]


def quantize_recipe(recipe: TflmRecipe, float_model: bytes, calibration: np.ndarray,
                    kept: KeptRanges | None = None) -> bytes:
    """The finished .tflite of `float_model` under `recipe` (firmware_export.tflm.recipes). The
    int8 recipe quantizes the converter's model as it is, so its bytes are the build's before
    the recipes existed; the others quantize it with its tensors renamed for scope matching.
    `kept` carries the calibrated ranges from one recipe of the model to the next."""
    if recipe.sixteen_bit == "none":
        return flatbuffer.finish(int8_tflite(float_model, calibration, kept=kept))
    named = named_outputs(float_model)
    scopes = sixteen_bit_scopes(recipe, named)
    return flatbuffer.finish(int8_tflite(named, calibration, sixteen_bit_scopes=scopes,
                                         kept=kept))


def all_windows(waveforms: np.ndarray, window: int) -> np.ndarray:
    """Every window of every clip [clips * windows, window], clip by clip."""
    return np.concatenate([split_windows(clip, window) for clip in waveforms])


def windowed_fp32(model: nn.Module, waveforms: np.ndarray, window: int) -> np.ndarray:
    """The fp32 network (PyTorch) on each clip's windows, logits pooled per clip [clips, C].
    Every window of every clip in batches of parity.LARGE_BATCH windows, clip by clip, cut
    from the clips batch by batch (all windows at once would copy every held-out clip)."""
    per_clip = len(split_windows(waveforms[0], window))
    run = parity.torch_runner(model)
    total = len(waveforms) * per_clip
    parts = []
    for start in range(0, total, parity.LARGE_BATCH):
        indices = range(start, min(start + parity.LARGE_BATCH, total))
        first_clip, last_clip = indices[0] // per_clip, indices[-1] // per_clip
        windows = all_windows(waveforms[first_clip:last_clip + 1], window)
        offset = first_clip * per_clip
        parts.append(run(np.ascontiguousarray(
            windows[indices[0] - offset:indices[-1] + 1 - offset], dtype=np.float32)))
    logits = np.concatenate(parts).astype(np.float64)
    return np.stack([pool(part) for part in logits.reshape(len(waveforms), per_clip, -1)])


def build_tflm(model: nn.Module, *, classes: Sequence[str], sample_rate: int, clip_samples: int,
               calibration_waveforms: np.ndarray, holdout_waveforms: np.ndarray,
               holdout_targets: np.ndarray,
               fp32_runner: Callable[[np.ndarray], np.ndarray],
               window_seconds: float | None = None,
               limits: DeviceLimits | None = None,
               recipes: Sequence[TflmRecipe] | None = None,
               progress: Callable[[str], None] | None = None,
               converter: ConverterProcess | None = None) -> TflmBuild:
    """Build and verify; `fp32_runner` maps waveforms [B, T] to the fp32 ONNX model's logits;
    `window_seconds` is --tflm-window-seconds (None: auto, 0: whole clip; see
    firmware_export.device.windows); a build over `limits` (arena, flatbuffer) is withheld.
    `recipes` (firmware_export.tflm.recipes.RECIPES unless given) are tried in order until one
    meets every check, each screened (screened_candidate); when none does, the first one's build is the
    withheld one, checked again in full for its figures (_full_parity). `progress` is
    told each recipe as it starts. `converter` converts and quantizes (ConverterProcess: in a
    child process; by default in this one)."""
    recipes = RECIPES if recipes is None else recipes
    converter = converter or ConverterProcess(child=False)
    config = model.frontend.config.to_dict()
    window = window_samples(clip_samples, sample_rate, window_seconds,
                            min_samples=int(config["n_fft"]))
    plan = LogMelPlan.from_config(config, window)
    logmels = WindowLogMels(plan)
    rss_stage("TFLM build: conversion and calibration")
    calibration = calibration_logmels(logmels, all_windows(calibration_waveforms, window))
    float_model = converter.float_model(model, torch.from_numpy(calibration[:1]))
    window_record = describe(window, clip_samples, sample_rate, window_seconds)
    targets = np.asarray(holdout_targets)
    references = Fp32References(model, fp32_runner, holdout_waveforms)
    chosen, candidates = try_recipes(
        recipes, lambda recipe: converter.quantized(recipe, float_model, calibration),
        lambda recipe, model_bytes: screened_candidate(recipe, model_bytes, logmels, references,
                                                       targets, clip_samples, window_record,
                                                       limits),
        progress)
    if chosen is None and candidates[0].figures is None:
        # Every recipe misses: the withheld build is the first, with its full figures.
        candidates[0] = _full_parity(candidates[0], logmels, references, targets, clip_samples,
                                     window_record, limits)
    build_from = chosen or candidates[0]
    section = _section(build_from, plan, n_calibration=len(calibration_waveforms))
    section["recipes_tried"] = [candidate.record() for candidate in candidates]
    if limits:
        section["limits"] = limits.describe()
    build = TflmBuild(build_from.model, section)
    if chosen is not None:
        build.files = _shipped_files(chosen.model, classes, section, plan, chosen.micro,
                                     split_windows(holdout_waveforms[0], window)[0],
                                     sample_rate=sample_rate, clip_samples=clip_samples)
        _add_embedding(build, model, logmels, classes, calibration_waveforms, references,
                       np.asarray(holdout_targets), sample_rate, clip_samples, limits, converter,
                       recipes[recipes.index(chosen.recipe):])
    return build


def try_recipes(recipes: Sequence[TflmRecipe], quantized: Callable[[TflmRecipe], bytes],
                check: Callable[[TflmRecipe, bytes], Candidate],
                progress: Callable[[str], None] | None, stage: str = "TFLM"
                ) -> tuple[Candidate | None, list[Candidate]]:
    """(the first recipe's candidate that meets every check or None, every candidate tried in
    order): `quantized(recipe)` is its model, `check(recipe, model)` its checks; `stage` names
    the memory stages."""
    tried: list[Candidate] = []
    for number, recipe in enumerate(recipes, 1):
        if progress is not None:
            progress(f"TFLM recipe {number} of {len(recipes)} ({recipe.name})")
        rss_stage(f"{stage} recipe {number}: quantization")
        tried.append(check(recipe, quantized(recipe)))
        if not tried[-1].failures:
            return tried[-1], tried
    assert tried, "no TFLM recipe to try"
    return None, tried


@dataclass
class Candidate:
    """One recipe's build and what its checks found."""

    recipe: TflmRecipe
    model: bytes
    float_ops: list[str]
    arena: int
    micro: MicroModel | None
    window_record: dict[str, Any]
    figures: dict[str, Any] | None
    failures: list[str]
    scores: list[np.ndarray] = field(default_factory=list)  # TFLM's clip scores run so far

    def record(self) -> dict[str, Any]:
        """What the manifest's recipes_tried says of it."""
        io = flatbuffer.io_tensors(self.model)
        agreement = (self.window_record.get("tflm_vs_fp32_windowed")
                     or (self.figures or {}).get("batch_1") or {})
        return {**self.recipe.describe(), "input": io["inputs"][0]["type"],
                "output": io["outputs"][0]["type"], "bytes": len(self.model),
                "arena_bytes": self.arena, "top1_agreement": agreement.get("top1_agreement"),
                "status": "misses" if self.failures else "meets the rule",
                "reason": "; ".join(self.failures) or None}


def screened_candidate(recipe: TflmRecipe, model_bytes: bytes, logmels: WindowLogMels,
                       references: Fp32References, targets: np.ndarray, clip_samples: int,
                       window_record: dict[str, Any], limits: DeviceLimits | None,
                       head: tuple[np.ndarray, np.ndarray] | None = None,
                       build: str = "TFLM build") -> Candidate:
    """Check one recipe's build, screened: float operators, arena and limits first (a build
    that fails one is not run), then parity, which stops at the first clip that makes the
    agreement half miss whatever the rest do (figures None; _full_parity gives them). With
    `head` (weight [D, C], bias [C]) the build is an embedding model, judged through that float
    head (HeadedMicroModel). `build` names the memory stages."""
    float_ops = flatbuffer.float_operators(model_bytes)
    rss_stage(f"{build}: arena")
    arena = find_arena(model_bytes)
    limit_misses = limit_failures(arena, len(model_bytes), limits)
    if float_ops or limit_misses:
        return Candidate(recipe, model_bytes, float_ops, arena, None, dict(window_record), None,
                         float_op_failures(float_ops) + limit_misses)
    return _with_parity(recipe, model_bytes, float_ops, arena, logmels, references, targets,
                        clip_samples, window_record, limit_misses, screen=True, head=head,
                        build=build)


def _with_parity(recipe: TflmRecipe, model_bytes: bytes, float_ops: list[str], arena: int,
                 logmels: WindowLogMels, references: Fp32References, targets: np.ndarray,
                 clip_samples: int, window_record: dict[str, Any], limit_misses: list[str],
                 screen: bool, resumed: Candidate | None = None,
                 head: tuple[np.ndarray, np.ndarray] | None = None,
                 build: str = "TFLM build") -> Candidate:
    """The candidate once TFLM's parity ran (with `screen`, `head` and `build`: see
    screened_candidate); it resumes after the clips `resumed` (the same model, screened) ran,
    in its interpreter."""
    record = dict(window_record)
    micro = resumed.micro if resumed and resumed.micro else MicroModel(model_bytes, arena)
    scores = list(resumed.scores) if resumed and resumed.micro else []
    judged = micro if head is None else HeadedMicroModel(micro, *head)
    figures, parity_misses = device_parity(judged, logmels, references, targets, clip_samples,
                                           record, build, screen=screen, scores=scores)
    return Candidate(recipe, model_bytes, float_ops, arena, micro, record, figures,
                     float_op_failures(float_ops) + parity_misses + limit_misses, scores)


def _full_parity(screened: Candidate, logmels: WindowLogMels, references: Fp32References,
                 targets: np.ndarray, clip_samples: int, window_record: dict[str, Any],
                 limits: DeviceLimits | None) -> Candidate:
    """A screened-out candidate checked in full (the withheld build's figures and reasons, as
    an unscreened check gives them): its parity on every held-out clip, resumed after the
    clips its screen ran, its arena and limit verdicts the same."""
    return _with_parity(screened.recipe, screened.model, screened.float_ops, screened.arena,
                        logmels, references, targets, clip_samples, window_record,
                        limit_failures(screened.arena, len(screened.model), limits),
                        screen=False, resumed=screened)


def _add_embedding(build: TflmBuild, model: nn.Module, logmels: WindowLogMels,
                   classes: Sequence[str],
                   calibration_waveforms: np.ndarray, references: Fp32References,
                   targets: np.ndarray, sample_rate: int, clip_samples: int,
                   limits: DeviceLimits | None, converter: ConverterProcess,
                   recipes: Sequence[TflmRecipe]) -> None:
    """The embedding model of a shipped build (firmware_export.tflm.embedding_build), tried in
    `recipes` (the shipped build's and those after it): its section under the build's
    `embedding`, its files beside the build's when it meets its checks."""
    from firmware_export.tflm.embedding_build import build_embedding, embedding_files

    plan = logmels.plan
    embedding = build_embedding(model, logmels, calibration_waveforms=calibration_waveforms,
                                references=references, holdout_targets=targets,
                                clip_samples=clip_samples,
                                window_record=build.section["window"], limits=limits,
                                converter=converter, recipes=recipes)
    build.section["embedding"] = embedding.section
    build.embedding = embedding
    if embedding.shipped:
        build.files.update(embedding_files(embedding, classes, plan, sample_rate=sample_rate,
                                           clip_samples=clip_samples))


class Fp32References:
    """What a phase's TFLM builds are compared with, each computed once and shared by the logits
    and the embedding build, and by every recipe of the logits build: the fp32 ONNX model's
    logits on the whole held-out clips (batch 1) and the fp32 network's on their windows, pooled
    per clip (windowed_fp32). `passes` counts the passes over the held-out clips actually made."""

    def __init__(self, model: nn.Module, fp32_runner: Callable[[np.ndarray], np.ndarray],
                 waveforms: np.ndarray) -> None:
        self.model, self.fp32_runner, self.waveforms = model, fp32_runner, waveforms
        self._whole: np.ndarray | None = None
        self._windows: dict[int, np.ndarray] = {}
        self.passes = 0

    def whole(self) -> np.ndarray:
        if self._whole is None:
            rss_stage("TFLM build: parity, fp32 ONNX on whole clips")
            self.passes += 1
            self._whole = parity.batched(self.fp32_runner, self.waveforms, 1)
        return self._whole

    def windowed(self, window: int) -> np.ndarray:
        if window not in self._windows:
            rss_stage("TFLM build: parity, fp32 network on windows")
            self.passes += 1
            self._windows[window] = windowed_fp32(self.model, self.waveforms, window)
        return self._windows[window]


def device_parity(micro: MicroModel | HeadedMicroModel, logmels: WindowLogMels,
                  references: Fp32References, targets: np.ndarray, clip_samples: int,
                  window_record: dict[str, Any], build: str = "TFLM build", *,
                  screen: bool = False, scores: list[np.ndarray] | None = None):
    """(figures, failures) of TFLM against the fp32 ONNX model on whole clips, and for a
    windowed build against the fp32 network on the same windows, recorded in `window_record`
    (module docstring). `logmels` is the front end (its plan: one window). `build` names the
    memory stages. With `screen`, TFLM stops at the first clip whose changed top-1 makes the
    agreement half of the rule miss on every held-out clip: figures None, the miss its one
    failure. `scores` holds the model's clip scores already run (extended in place): a full
    check after a screen resumes where the screen stopped."""
    window = logmels.plan.clip_samples  # the model's input: one window
    whole = references.whole()
    windowed = references.windowed(window) if window < clip_samples else None
    judged = windowed if windowed is not None else whole
    rss_stage(f"{build}: parity, TFLM on windows")
    device, stopped = _device_scores(micro, logmels, references.waveforms,
                                     judged if screen else None,
                                     [] if scores is None else scores)
    if stopped:
        return None, [f"TFLM screen: top-1 changed on {stopped[0]} of the first {stopped[1]} "
                      f"clips, a certain miss of the agreement bound on {len(targets)} clips"]
    figures = {"batch_1": parity.compare(whole, device, targets)}
    if windowed is not None:
        window_record["fp32_windowed_vs_whole"] = parity.compare(whole, windowed, targets)
        window_record["tflm_vs_fp32_windowed"] = parity.compare(windowed, device, targets)
        failures = [f"TFLM {text}" for text in parity.windowed_failures(
            figures["batch_1"], window_record["tflm_vs_fp32_windowed"])]
    else:
        failures = [text.replace("int8 vs fp32", "TFLM int8 vs fp32 ONNX")
                    for text in parity.int8_failures(figures)]
    return figures, failures


def _device_scores(micro: MicroModel | HeadedMicroModel, logmels: WindowLogMels,
                   waveforms: np.ndarray, judged: np.ndarray | None, scores: list[np.ndarray]
                   ) -> tuple[np.ndarray, tuple[int, int] | None]:
    """TFLM's pooled scores per clip [clips, C] (float64, as parity.batched gives them); with
    `judged` (the reference's logits), (empty, (changed, clips seen)) as soon as the changed
    top-1 make the agreement miss certain (parity.agreement_miss_certain). `scores` are the
    first clips' scores already run (extended in place)."""
    changed = 0
    for index, clip in enumerate(waveforms):
        if index >= len(scores):
            scores.append(clip_logits(micro, logmels.plan,
                                      np.ascontiguousarray(clip, dtype=np.float32), logmels))
        if judged is not None:
            changed += int(np.argmax(scores[index]) != np.argmax(judged[index]))
            if parity.agreement_miss_certain(changed, len(waveforms)):
                return np.empty(0), (changed, index + 1)
    return np.stack(scores).astype(np.float64), None


def float_op_failures(float_ops: list[str]) -> list[str]:
    """The check that every operator is int8, as a failure list (empty when it holds)."""
    return ([f"{len(float_ops)} float operator(s): {', '.join(sorted(set(float_ops)))}"]
            if float_ops else [])


def model_figures(model_bytes: bytes, float_ops: list[str], arena: int) -> dict[str, Any]:
    """What a manifest says of a TFLM flatbuffer: size, hash, operators, arena and its I/O."""
    ops = flatbuffer.operators(model_bytes)
    io = flatbuffer.io_tensors(model_bytes)
    return {"bytes": len(model_bytes), "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "ops": sorted(set(ops)), "operators": len(ops), "float_ops": len(float_ops),
            "arena_bytes": arena, "input": io["inputs"][0], "output": io["outputs"][0]}


def _section(candidate: Candidate, plan: LogMelPlan, n_calibration: int) -> dict[str, Any]:
    """The manifest's "tflm" section, of the recipe that shipped (or the withheld one)."""
    failures = candidate.failures
    return {
        "file": MODEL_TFLM, "status": "withheld" if failures else "shipped",
        "reason": "; ".join(failures) if failures else None,
        **model_figures(candidate.model, candidate.float_ops, candidate.arena),
        "recipe": candidate.recipe.describe(),
        "input_layout": "[1, 1, n_mels, frames] log-mel of one window, mel-major",
        "window": candidate.window_record,
        "calibration": {"clips": n_calibration, "ranges": "global min/max"},
        "front_end": {"language": "C99", "arithmetic": "float32", "files": [FRONTEND_HEADER,
                                                                            FRONTEND_SOURCE],
                      "frames": plan.n_frames, "first_bin": plan.first_bin,
                      "bins": plan.n_bins},
        "parity_vs_fp32": candidate.figures,
        "interpreter": "tflite-micro (TFLM reference kernels)",
        "toolchain": toolchain_versions(),
    }


def _shipped_files(model_bytes: bytes, classes: Sequence[str], section: dict[str, Any],
                   plan: LogMelPlan, micro: MicroModel, clip: np.ndarray, *, sample_rate: int,
                   clip_samples: int) -> dict[str, bytes]:
    """The bundle files of a shipped build; `clip` (one window) becomes the test vectors."""
    from firmware_export.device.logmel import quantize

    labels = [str(name) for name in classes]
    features = logmel(plan, clip)
    codes = quantize(features, micro.input.scale, micro.input.zero_point, micro.input_dtype)
    header, source = render_frontend(plan, int16_input=micro.input_dtype == np.int16)
    return {
        MODEL_TFLM: model_bytes,
        TFLM_HEADER: render_model_header(model_bytes, labels, section, plan,
                                         sample_rate=sample_rate,
                                         clip_samples=clip_samples).encode("utf-8"),
        FRONTEND_HEADER: header.encode("utf-8"),
        FRONTEND_SOURCE: source.encode("utf-8"),
        TFLM_TEST_VECTORS: render_test_vectors(clip, features, codes,
                                               micro.run_codes(codes)).encode("utf-8"),
    }
