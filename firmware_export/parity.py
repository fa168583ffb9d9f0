"""Parity of the exported models with the trained one, at batch 1 and a larger batch.

Measured on the held-out clips of the seen classes (validation and test, never calibration clips).

- fp32 ONNX Runtime vs PyTorch: max abs logit difference <= 1e-3 and the same top-1 on every clip
  whose top-2 margin exceeds 2e-3 (closer logits may swap within the bound). The same graph
  computed twice: any miss is a bug, so a miss raises ParityError and nothing ships.
- int8 vs fp32 ONNX Runtime: the int8 model misses its bound only when it is worse *beyond noise*:
  * agreement: fewer than 98% of clips keep their top-1 AND an exact one-sided binomial test
    rejects "at most 2% of clips change" at the 5% level (so 1 changed clip of 80 is no miss);
  * accuracy: the drop exceeds 1 point AND an exact one-sided McNemar test on the discordant clips
    (fp32 right and int8 wrong, against the reverse) says int8 is worse at the 5% level.
  A miss withholds the int8 artifact; the fp32 one still ships.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecl.errors import EdgeclError
from firmware_export.device.layout import INPUT_NAME
from models.classifier import LogitsOnly

LARGE_BATCH = 32
FP32_MAX_ABS_DIFF = 1e-3
FP32_MIN_AGREEMENT = 1.0
INT8_MIN_AGREEMENT = 0.98
INT8_MAX_ACCURACY_DROP_POINTS = 1.0
SIGNIFICANCE = 0.05  # a miss must be significant at this level (one-sided exact tests)

Runner = Callable[[np.ndarray], np.ndarray]


class ParityError(EdgeclError):
    """An exported model misses a parity bound; `.figures` holds what was measured."""

    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.figures = figures


def ort_runner(sess) -> Runner:
    """waveforms [B, T] -> logits [B, C] through an ONNX Runtime session. Each run hands the
    memory its arena grew by back (onnxruntime's arena shrinkage): a session kept for the phase
    would otherwise hold a batch of LARGE_BATCH 5 s clips' activations (0.5-0.9 GB at 44.1 kHz)
    to its end. The arithmetic, hence the logits, do not depend on it."""
    import onnxruntime

    options = onnxruntime.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return lambda batch: sess.run(None, {INPUT_NAME: batch}, options)[0]


def torch_runner(model: nn.Module) -> Runner:
    """waveforms [B, T] -> logits [B, C] through the PyTorch model in eval mode, no grad."""
    logits_only = LogitsOnly(model)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return logits_only(torch.from_numpy(batch)).detach().cpu().numpy()
    return run


def array_key(array: np.ndarray) -> bytes:
    """A key of an array's content (its bytes, dtype and shape), for keeping what was computed
    from it: equal arrays give equal keys."""
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(array.data, digest_size=20)
    digest.update(f"{array.dtype}{array.shape}".encode())
    return digest.digest()


class MemoRunner:
    """A runner that computes each distinct batch once: the fp32 model's logits on the held-out
    clips are asked for by the fp32 check, the int8 search and both TFLM builds (at batch 1 the
    same clip by clip), and a deterministic session gives the same logits for the same input
    bytes, so they are kept by a hash of the batch (only the logits: [B, classes]). `runs`
    counts the batches actually computed."""

    def __init__(self, run: Runner) -> None:
        self._run = run
        self._logits: dict[bytes, np.ndarray] = {}
        self.runs = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        key = array_key(batch)
        if key not in self._logits:
            self.runs += 1
            self._logits[key] = np.asarray(self._run(batch))
        return self._logits[key].copy()


def batched(run: Runner, waveforms: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for all waveforms, computed `batch_size` clips at a time."""
    parts = [run(np.ascontiguousarray(waveforms[i:i + batch_size], dtype=np.float32))
             for i in range(0, len(waveforms), batch_size)]
    return np.concatenate(parts).astype(np.float64)


def compare(reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Figures for candidate vs reference logits on labelled clips (accuracies in percent)."""
    ranked = np.sort(reference, axis=1)
    margin = (ranked[:, -1] - ranked[:, -2] if reference.shape[1] > 1
              else np.full(len(targets), np.inf))
    ref_top1, cand_top1 = reference.argmax(axis=1), candidate.argmax(axis=1)
    changed = ref_top1 != cand_top1
    ref_right, cand_right = ref_top1 == targets, cand_top1 == targets
    n_clips, differ = len(targets), int(np.sum(changed))
    lost, gained = int(np.sum(ref_right & ~cand_right)), int(np.sum(~ref_right & cand_right))
    accuracy_ref = 100.0 * float(np.mean(ref_right))
    accuracy_cand = 100.0 * float(np.mean(cand_right))
    error = np.abs(reference - candidate)
    return {
        "clips": n_clips,
        "max_abs_logit_diff": float(np.max(error)),
        "mean_abs_logit_diff": float(np.mean(error)),
        "top1_agreement": 1.0 - differ / n_clips,
        "top1_disagreements": differ,
        # Changed top-1 where the reference's top-2 margin exceeds what fp32 rounding may move.
        "decisive_disagreements": int(np.sum(changed & (margin > 2 * FP32_MAX_ABS_DIFF))),
        "agreement_p_value": round(binomial_tail(differ, n_clips, 1.0 - INT8_MIN_AGREEMENT), 6),
        "accuracy_reference": round(accuracy_ref, 4),
        "accuracy": round(accuracy_cand, 4),
        "accuracy_drop_points": round(accuracy_ref - accuracy_cand, 4),
        "clips_lost": lost,
        "clips_gained": gained,
        "mcnemar_p_value": round(binomial_tail(lost, lost + gained, 0.5), 6),
    }


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact up to float rounding (terms summed in log space,
    so thousands of clips do not overflow)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
             + i * log_p + (n - i) * log_q for i in range(k, n + 1)]
    return float(min(1.0, sum(math.exp(t) for t in terms)))


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
        if f.get("decisive_disagreements", f["top1_disagreements"]) > 0:
            failures.append(f"fp32 vs torch {batch}: top-1 agreement "
                            f"{100 * f['top1_agreement']:.2f}% < 100% on clips with a top-2 margin "
                            f"over {2 * FP32_MAX_ABS_DIFF:g}")
    return failures


def _agreement_misses(agreement: float, p_value: float) -> bool:
    """The agreement half of the int8 rule: below the bound and significantly so."""
    return agreement < INT8_MIN_AGREEMENT and p_value < SIGNIFICANCE


def agreement_miss_certain(differ: int, n_clips: int) -> bool:
    """True when `differ` clips with a changed top-1 already make the agreement rule miss on
    `n_clips` clips, whatever the remaining clips do: more changed clips only lower the
    agreement and the binomial tail, so the miss at `differ` of `n_clips` is the mildest one."""
    return _agreement_misses(1.0 - differ / n_clips,
                             binomial_tail(differ, n_clips, 1.0 - INT8_MIN_AGREEMENT))


def int8_failures(figures: dict[str, dict[str, float]]) -> list[str]:
    """Bound misses of int8 vs fp32 ONNX, one phrase each (empty when within bounds): below the
    bound and significantly so (see the module doc)."""
    failures = []
    for batch, f in figures.items():
        p_agree = f.get("agreement_p_value", 0.0)
        if _agreement_misses(f["top1_agreement"], p_agree):
            failures.append(f"int8 vs fp32 {batch}: top-1 agreement "
                            f"{100 * f['top1_agreement']:.2f}% < {100 * INT8_MIN_AGREEMENT:g}% "
                            f"({f['top1_disagreements']} of {f['clips']} clips differ, "
                            f"p={p_agree:.3g})")
        failures += accuracy_failures({batch: f})
    return failures


def accuracy_failures(figures: dict[str, dict[str, float]]) -> list[str]:
    """The accuracy half of the int8 rule alone: a drop of more than the bound that McNemar's test
    finds significant. (A windowed TFLM build answers to it against the whole-clip model: cutting
    a clip into windows may flip near-tied clips either way, which is no loss.)"""
    failures = []
    for batch, f in figures.items():
        p_drop = f.get("mcnemar_p_value", 0.0)
        if f["accuracy_drop_points"] > INT8_MAX_ACCURACY_DROP_POINTS and p_drop < SIGNIFICANCE:
            failures.append(f"int8 vs fp32 {batch}: accuracy {f['accuracy']:.2f}% vs "
                            f"{f['accuracy_reference']:.2f}%, drop {f['accuracy_drop_points']:.2f} "
                            f"points > {INT8_MAX_ACCURACY_DROP_POINTS:g} "
                            f"({f['clips_lost']} clips lost, {f['clips_gained']} gained, McNemar "
                            f"p={p_drop:.3g})")
    return failures


def windowed_failures(device_vs_whole: dict[str, float],
                      device_vs_windows: dict[str, float]) -> list[str]:
    """Misses of a build that runs a clip as windows and pools their scores: int8's own cost
    against the fp32 network on the same windows (the whole rule), and the device against the
    fp32 model on the whole clip (the accuracy half alone)."""
    same = [text.replace("int8 vs fp32 batch_1", "int8 vs fp32 on the same windows")
            for text in int8_failures({"batch_1": device_vs_windows})]
    whole = [text.replace("int8 vs fp32 batch_1", "int8 on windows vs fp32 on the whole clip")
             for text in accuracy_failures({"batch_1": device_vs_whole})]
    return same + whole


def bounds() -> dict[str, float]:
    """The parity bounds, for the manifest."""
    return {"fp32_max_abs_logit_diff": FP32_MAX_ABS_DIFF,
            "fp32_min_top1_agreement": FP32_MIN_AGREEMENT,
            "int8_min_top1_agreement": INT8_MIN_AGREEMENT,
            "int8_max_accuracy_drop_points": INT8_MAX_ACCURACY_DROP_POINTS,
            "int8_significance": SIGNIFICANCE,
            "int8_rule": "miss = below a bound and significant: exact binomial test on changed "
                         "top-1 (H0: <= 2% change), exact McNemar test on lost vs gained clips"}
