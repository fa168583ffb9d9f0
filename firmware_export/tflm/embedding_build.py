"""The TFLM build's embedding model: the same quantized network cut before its classifier, for a
float head in C on the device (the trained head's weights, or the analytic head a bundle learns:
firmware_export.device.learn, rls.c).

Converted, quantized and finished like the logits model (firmware_export.tflm.build), through
its recipes (firmware_export.tflm.recipes) from the one the logits model shipped with: the
backbone is the same, so a recipe that missed there is not tried again. An `int8` build gives an
int8 embedding, a 16x8 one an int16 embedding (zero point 0). Held to the same checks: every
operator integer, the arena found by allocating, the deployment limits, and the int8 parity rule
against the fp32 ONNX model, with the trained head applied in float to the dequantized embedding
(what the device computes). The parity is screened, as the logits build's recipes are: a miss
stops at the first clip that makes it certain, so a recipe that misses costs a part of a pass
over the held-out windows, not all of it (its reason then says so; a withheld model is the first
recipe's, whose section then has no parity figures). Its agreement with the float embedding is
recorded too: on the held-out clips' windows, the error of the dequantized embedding relative to
the float one (the same graph in PyTorch, norms folded), in L2 norm per window, and its largest
absolute error in output steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecl.budget.ram import rss_stage
from firmware_export.device.layout import MODEL_TFLM_EMBEDDING, TFLM_EMBEDDING_HEADER
from firmware_export.device.logmel import LogMelPlan
from firmware_export.device.tflm_runtime import MicroModel
from firmware_export.tflm import build as logits_build
from firmware_export.tflm.build import (
    Candidate,
    Fp32References,
    TflmBuild,
    WindowLogMels,
    all_windows,
)
from firmware_export.tflm.c_model import render_model_header
from firmware_export.tflm.converter_process import ConverterProcess
from firmware_export.tflm.limits import DeviceLimits
from firmware_export.tflm.recipes import RECIPES, TflmRecipe
from firmware_export.tflm.rewrite import tflm_graph

# Windows of held-out clips on which the embedding's quantization error is measured.
AGREEMENT_WINDOWS = 64


def build_embedding(model: nn.Module, logmels: WindowLogMels, *,
                    calibration_waveforms: np.ndarray,
                    references: Fp32References, holdout_targets: np.ndarray, clip_samples: int,
                    window_record: dict[str, Any], limits: DeviceLimits | None,
                    converter: ConverterProcess | None = None,
                    recipes: Sequence[TflmRecipe] = RECIPES) -> TflmBuild:
    """The embedding model's build, calibrated on the logits model's clips; its files only when
    it meets every check. `references` are the fp32 logits the logits build was compared with
    (the same held-out clips), `logmels` its front end (the same windows' log-mels).
    `window_record` is the logits build's (copied, not changed). `converter` converts and
    quantizes (as logits_build.convert_tflite; by default in this process). `recipes` are tried
    in order until one meets every check (the logits build passes the one it shipped and those
    after it: the backbone is the same, so an earlier recipe missed there already); when none
    does, the first one's build is the withheld one."""
    plan = logmels.plan
    converter = converter or ConverterProcess(child=False)
    rss_stage("TFLM embedding build: conversion and calibration")
    windows = all_windows(calibration_waveforms, plan.clip_samples)
    calibration = logits_build.calibration_logmels(logmels, windows)
    float_model = converter.float_model(model, torch.from_numpy(calibration[:1]), head=False)
    window = {key: value for key, value in window_record.items() if "_vs_" not in key}
    linear = model.head.fc
    head = (linear.weight.detach().numpy().T, linear.bias.detach().numpy())
    chosen, tried = logits_build.try_recipes(
        recipes, lambda recipe: converter.quantized(recipe, float_model, calibration),
        lambda recipe, model_bytes: logits_build.screened_candidate(
            recipe, model_bytes, logmels, references, holdout_targets, clip_samples, window,
            limits, head=head, build="TFLM embedding build"),
        progress=None, stage="TFLM embedding build")
    build_from = chosen or tried[0]
    section = _section(build_from)
    section["recipes_tried"] = [candidate.record() for candidate in tried]
    rss_stage("TFLM embedding build: agreement with the float embedding")
    # a model that failed its float-op or limit check was not loaded
    micro = build_from.micro or MicroModel(build_from.model, build_from.arena)
    section["embedding_vs_float"] = embedding_agreement(model, micro, logmels,
                                                        references.waveforms)
    return TflmBuild(build_from.model, section)


def embedding_agreement(model: nn.Module, micro: MicroModel, logmels: WindowLogMels,
                        waveforms: np.ndarray) -> dict[str, Any]:
    """The dequantized embedding against the float graph's on the same log-mels (at most
    AGREEMENT_WINDOWS windows of `waveforms`, every window of each clip in turn; `logmels` the
    front end)."""
    graph = tflm_graph(model, head=False)
    # every clip has a window at least: the first AGREEMENT_WINDOWS clips hold the windows used
    windows = all_windows(waveforms[:AGREEMENT_WINDOWS],
                          logmels.plan.clip_samples)[:AGREEMENT_WINDOWS]
    features = [logmels(window) for window in windows]
    int8 = np.stack([micro.run_logmel(f) for f in features]).astype(np.float64)
    with torch.no_grad():
        exact = np.stack([graph(torch.from_numpy(f[None, None]))[0].numpy() for f in features]
                         ).astype(np.float64)
    relative = np.linalg.norm(int8 - exact, axis=1) / np.maximum(
        np.linalg.norm(exact, axis=1), 1e-12)
    return {"windows": len(windows), "relative_l2_max": round(float(relative.max()), 5),
            "relative_l2_median": round(float(np.median(relative)), 5),
            "max_abs_diff": round(float(np.abs(int8 - exact).max()), 6),
            "output_scale": micro.output.scale,
            "max_abs_diff_steps": round(float(np.abs(int8 - exact).max() / micro.output.scale), 3)}


def _section(candidate: Candidate) -> dict[str, Any]:
    """The manifest's tflm.embedding section, of the recipe that shipped (or the withheld one)."""
    figures_of_model = logits_build.model_figures(candidate.model, candidate.float_ops,
                                                  candidate.arena)
    return {
        "file": MODEL_TFLM_EMBEDDING, "header": TFLM_EMBEDDING_HEADER,
        "status": "withheld" if candidate.failures else "shipped",
        "reason": "; ".join(candidate.failures) if candidate.failures else None,
        **figures_of_model,
        "dim": int(figures_of_model["output"]["shape"][-1]),
        "recipe": candidate.recipe.describe(),
        "head": "float32 in C on the dequantized embedding (the trained head's weights, or the "
                "learnt analytic head: rls.c); per clip, the mean of its windows' logits",
        "parity_vs_fp32": candidate.figures, "window": candidate.window_record,
    }


def embedding_files(build: TflmBuild, classes: Sequence[str], plan: LogMelPlan, *,
                    sample_rate: int, clip_samples: int) -> dict[str, bytes]:
    """The embedding model and its C header (prefix edgecl_tflm_embedding)."""
    header = render_model_header(build.model, classes, build.section, plan,
                                 sample_rate=sample_rate, clip_samples=clip_samples,
                                 prefix="edgecl_tflm_embedding",
                                 output=(f"{_code_type(build.section)} embedding "
                                         f"[1][{build.section['dim']}]; z = (q - "
                                         f"OUTPUT_ZERO_POINT) * OUTPUT_SCALE, the float head's "
                                         f"input (rls.h); N_LABELS and labels are the trained "
                                         f"head's"))
    return {MODEL_TFLM_EMBEDDING: build.model, TFLM_EMBEDDING_HEADER: header.encode("utf-8")}


def _code_type(section: dict[str, Any]) -> str:
    """The embedding's integer type in C terms: int8, or int16 for a 16x8 recipe."""
    return "int16" if section["output"]["type"] == "INT16" else "int8"
