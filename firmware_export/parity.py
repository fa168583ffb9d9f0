"""Parity of the exported models with the trained one, at batch 1 and a larger batch.

Bounds (checked at export, recorded in the manifest):
- fp32 ONNX Runtime vs PyTorch: max abs logit difference <= 1e-3 and top-1 agreement 100%;
- int8 vs fp32 ONNX Runtime: top-1 agreement >= 98% and accuracy drop <= 1 point.
A miss raises ParityError carrying the figures.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgecl.errors import EdgeclError
from firmware_export.layout import INPUT_NAME

LARGE_BATCH = 32
FP32_MAX_ABS_DIFF = 1e-3
FP32_MIN_AGREEMENT = 1.0
INT8_MIN_AGREEMENT = 0.98
INT8_MAX_ACCURACY_DROP_POINTS = 1.0

Runner = Callable[[np.ndarray], np.ndarray]


class ParityError(EdgeclError):
    """An exported model misses a parity bound; `.figures` holds what was measured."""

    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.figures = figures


def ort_runner(sess) -> Runner:
    """waveforms [B, T] -> logits [B, C] through an ONNX Runtime session."""
    return lambda batch: sess.run(None, {INPUT_NAME: batch})[0]


def torch_runner(model: nn.Module) -> Runner:
    """waveforms [B, T] -> logits [B, C] through the PyTorch model in eval mode, no grad."""
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            output = model(torch.from_numpy(batch))
        logits = output[0] if isinstance(output, (tuple, list)) else output
        return logits.detach().cpu().numpy()
    return run


def batched(run: Runner, waveforms: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for all waveforms, computed `batch_size` clips at a time."""
    parts = [run(np.ascontiguousarray(waveforms[i:i + batch_size], dtype=np.float32))
             for i in range(0, len(waveforms), batch_size)]
    return np.concatenate(parts).astype(np.float64)


def compare(reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Figures for candidate vs reference logits on labelled clips (accuracies in percent)."""
    ref_top1, cand_top1 = reference.argmax(axis=1), candidate.argmax(axis=1)
    accuracy_ref = 100.0 * float(np.mean(ref_top1 == targets))
    accuracy_cand = 100.0 * float(np.mean(cand_top1 == targets))
    return {
        "max_abs_logit_diff": float(np.max(np.abs(reference - candidate))),
        "mean_abs_logit_diff": float(np.mean(np.abs(reference - candidate))),
        "top1_agreement": float(np.mean(ref_top1 == cand_top1)),
        "top1_disagreements": int(np.sum(ref_top1 != cand_top1)),
        "accuracy_reference": round(accuracy_ref, 4),
        "accuracy": round(accuracy_cand, 4),
        "accuracy_drop_points": round(accuracy_ref - accuracy_cand, 4),
    }


def batch_sizes(n_clips: int) -> list[int]:
    """Batch 1 and a larger batch (LARGE_BATCH, or all clips when fewer)."""
    return sorted({1, max(1, min(LARGE_BATCH, n_clips))})


def measure(reference: Runner, candidate: Runner, waveforms: np.ndarray,
            targets: np.ndarray) -> dict[str, dict[str, float]]:
    """compare() at each batch size, both runners fed the same batches: {"batch_<n>": figures}."""
    return {f"batch_{size}": compare(batched(reference, waveforms, size),
                                     batched(candidate, waveforms, size), targets)
            for size in batch_sizes(len(waveforms))}


def fp32_failures(figures: dict[str, dict[str, float]]) -> list[str]:
    """Bound violations of fp32 ONNX vs PyTorch, one phrase each (empty when within bounds)."""
    failures = []
    for batch, f in figures.items():
        if not f["max_abs_logit_diff"] <= FP32_MAX_ABS_DIFF:
            failures.append(f"fp32 vs torch {batch}: max abs logit diff "
                            f"{f['max_abs_logit_diff']:.3g} > {FP32_MAX_ABS_DIFF:g}")
        if f["top1_agreement"] < FP32_MIN_AGREEMENT:
            failures.append(f"fp32 vs torch {batch}: top-1 agreement "
                            f"{100 * f['top1_agreement']:.2f}% < 100%")
    return failures


def int8_failures(figures: dict[str, dict[str, float]]) -> list[str]:
    """Bound violations of int8 vs fp32 ONNX, one phrase each (empty when within bounds)."""
    failures = []
    for batch, f in figures.items():
        if f["top1_agreement"] < INT8_MIN_AGREEMENT:
            differ = f.get("top1_disagreements")
            failures.append(f"int8 vs fp32 {batch}: top-1 agreement "
                            f"{100 * f['top1_agreement']:.2f}% < {100 * INT8_MIN_AGREEMENT:g}%"
                            + (f" ({differ} clips differ)" if differ is not None else ""))
        if f["accuracy_drop_points"] > INT8_MAX_ACCURACY_DROP_POINTS:
            failures.append(f"int8 vs fp32 {batch}: accuracy {f['accuracy']:.2f}% vs "
                            f"{f['accuracy_reference']:.2f}%, drop {f['accuracy_drop_points']:.2f} "
                            f"points > {INT8_MAX_ACCURACY_DROP_POINTS:g}")
    return failures


def bounds() -> dict[str, float]:
    """The parity bounds, for the manifest."""
    return {"fp32_max_abs_logit_diff": FP32_MAX_ABS_DIFF,
            "fp32_min_top1_agreement": FP32_MIN_AGREEMENT,
            "int8_min_top1_agreement": INT8_MIN_AGREEMENT,
            "int8_max_accuracy_drop_points": INT8_MAX_ACCURACY_DROP_POINTS}
