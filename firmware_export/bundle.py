"""export_phase: one trained phase -> a verified device bundle folder, written atomically.

The bundle (`model.onnx`, `model.int8.onnx`, `labels.json`, `model.h`, `manifest.json`) is built in
a temporary sibling folder and swapped in by rename, so readers see either the old bundle or the
new one. Files already in the phase folder that are not part of the bundle (the trainer's
checkpoint.pt) are carried over by hard link. Nothing is written when a parity bound is missed:
ParityError carries the figures instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from edgecl import __version__
from edgecl.errors import EdgeclError
from edgecl.fileio import atomic_write_bytes, atomic_write_json
from firmware_export import parity
from firmware_export.c_header import render_c_header
from firmware_export.export import OPSET, export_onnx, serialize
from firmware_export.layout import (BUNDLE_FILES, C_HEADER, INPUT_NAME, LABELS, MANIFEST,
                                    MANIFEST_FORMAT, MODEL_FP32, MODEL_INT8, OUTPUT_NAME)
from firmware_export.manifest import file_entries
from firmware_export.runtime import cpu_session
from firmware_export.quantize import (REDUCE_RANGE, QuantizedModel, quantize_candidate,
                                      quantized_front_end_inputs)

# MinMax ranges settle after a hundred-odd clips; more only costs calibration time.
MAX_CALIBRATION_CLIPS = 128


def export_phase(model: nn.Module, out_dir: str | os.PathLike, *, phase: int,
                 classes: Sequence[str], calibration_waveforms: np.ndarray,
                 holdout_waveforms: np.ndarray, holdout_targets: Sequence[int],
                 extra_manifest: dict[str, Any] | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export a SoundClassifier after `phase` to the bundle folder `out_dir`; returns the manifest.

    `classes` are the names of the model's outputs in order; `calibration_waveforms` [N, T] and
    `holdout_waveforms` [M, T] float32 clips of seen classes only (T = the model's clip length),
    `holdout_targets` [M] their label ids. At most MAX_CALIBRATION_CLIPS calibration clips are used,
    evenly spaced over the given order. Parity is checked on the held-out clips; a miss raises
    parity.ParityError naming the figures and leaves `out_dir` untouched. `extra_manifest` entries
    (e.g. the run's dataset and method) are stored under "run"; `log` gets a one-line summary.
    """
    classes = [str(name) for name in classes]
    calibration = _waveforms(calibration_waveforms, "calibration_waveforms")
    calibration = calibration[evenly_spaced(len(calibration), MAX_CALIBRATION_CLIPS)]
    holdout = _waveforms(holdout_waveforms, "holdout_waveforms")
    targets = np.asarray(holdout_targets, dtype=np.int64).reshape(-1)
    clip_samples = holdout.shape[1]
    if calibration.shape[1] != clip_samples or len(targets) != len(holdout):
        raise EdgeclError(f"export phase {phase}: calibration clips have {calibration.shape[1]} "
                          f"samples and held-out clips {clip_samples} ({len(targets)} targets for "
                          f"{len(holdout)} clips); expected equal lengths")
    if targets.min() < 0 or targets.max() >= len(classes):
        raise EdgeclError(f"export phase {phase}: held-out targets must lie in [0, {len(classes)})")
    sample_rate = int(model.frontend.config.sample_rate)

    was_training = model.training
    model.eval()
    try:
        fp32 = export_onnx(model, labels=classes, sample_rate=sample_rate,
                           clip_samples=clip_samples)
        fp32_bytes = serialize(fp32)
        fp32_session = cpu_session(fp32_bytes)
        n_outputs = fp32_session.get_outputs()[0].shape[-1]
        if n_outputs != len(classes):
            raise EdgeclError(f"export phase {phase}: the model has {n_outputs} outputs but "
                              f"{len(classes)} class names were given")
        fp32_runner = parity.ort_runner(fp32_session)
        fp32_figures = parity.measure(parity.torch_runner(model), fp32_runner, holdout, targets)
        chosen, candidates = _best_int8(fp32, fp32_runner, calibration)
        int8_bytes = serialize(chosen.proto)
        int8_figures = parity.measure(fp32_runner, parity.ort_runner(cpu_session(int8_bytes)),
                                      holdout, targets)
        manifest = _manifest(model, phase=phase, classes=classes, sample_rate=sample_rate,
                             clip_samples=clip_samples, n_calibration=len(calibration),
                             n_holdout=len(holdout), chosen=chosen, candidates=candidates,
                             fp32_figures=fp32_figures, int8_figures=int8_figures)
    finally:
        model.train(was_training)
    if extra_manifest:
        manifest["run"] = dict(extra_manifest)

    failures = parity.fp32_failures(fp32_figures) + parity.int8_failures(int8_figures)
    if failures:
        raise parity.ParityError(f"export phase {phase} to {out_dir}: parity check failed: "
                                 + "; ".join(failures), manifest["parity"])
    header = render_c_header(int8_bytes, classes, sample_rate=sample_rate,
                             clip_samples=clip_samples)
    files = {MODEL_FP32: fp32_bytes, MODEL_INT8: int8_bytes,
             LABELS: (_json_text(classes)).encode("utf-8"), C_HEADER: header.encode("utf-8")}
    manifest = write_bundle(Path(out_dir), files, manifest)
    if log is not None:
        log(summary_line(manifest, out_dir))
    return manifest


def summary_line(manifest: dict[str, Any], out_dir: str | os.PathLike) -> str:
    """One line with the parity figures at the largest batch, for the run log."""
    parity_figures = manifest["parity"]
    batch = max(parity_figures["int8_vs_fp32"], key=lambda name: int(name.split("_")[1]))
    fp32, int8 = parity_figures["fp32_vs_torch"][batch], parity_figures["int8_vs_fp32"][batch]
    granularity = manifest["quantization"]["weight_granularity"]
    return (f"  export phase {manifest['phase']} -> {out_dir}: fp32 max |logit diff| "
            f"{fp32['max_abs_logit_diff']:.2g}; int8 ({granularity}) top-1 agreement "
            f"{100 * int8['top1_agreement']:.1f}%, accuracy {int8['accuracy']:.1f}% vs "
            f"{int8['accuracy_reference']:.1f}% on {parity_figures['holdout_clips']} held-out "
            f"clips; "
            f"{manifest['files'][MODEL_FP32]['bytes'] / 1024:.0f} KiB fp32, "
            f"{manifest['files'][MODEL_INT8]['bytes'] / 1024:.0f} KiB int8")


def evenly_spaced(count: int, limit: int) -> list[int]:
    """Indices of at most `limit` of `count` items, evenly spaced, first and last included."""
    if count <= limit:
        return list(range(count))
    return [int(i) for i in np.linspace(0, count - 1, limit).round()]


def _waveforms(array: np.ndarray, name: str) -> np.ndarray:
    waveforms = np.ascontiguousarray(array, dtype=np.float32)
    if waveforms.ndim != 2 or len(waveforms) == 0 or waveforms.shape[1] == 0:
        raise EdgeclError(f"export: {name} must be a non-empty [clips, samples] array, got shape "
                          f"{tuple(waveforms.shape)}")
    return waveforms


def _best_int8(fp32: onnx.ModelProto, fp32_runner: parity.Runner,
               calibration: np.ndarray) -> tuple[QuantizedModel, dict[str, dict[str, float]]]:
    """Quantize per tensor and per channel; keep the one closer to fp32 on the calibration clips.

    Chosen on calibration clips (not the held-out ones the parity figures are reported on): higher
    top-1 agreement with fp32 wins, then the smaller mean abs logit difference.
    """
    reference = parity.batched(fp32_runner, calibration, parity.LARGE_BATCH)
    reference_top1 = reference.argmax(axis=1)
    scored = []
    for per_channel in (False, True):
        candidate = quantize_candidate(fp32, calibration, per_channel=per_channel)
        offenders = quantized_front_end_inputs(candidate.proto)
        if offenders:
            raise EdgeclError(f"int8 quantization put Q/DQ nodes into the float front end: "
                              f"{', '.join(offenders)}")
        logits = parity.batched(parity.ort_runner(cpu_session(serialize(candidate.proto))),
                                calibration, parity.LARGE_BATCH)
        figures = {"top1_agreement": float(np.mean(logits.argmax(axis=1) == reference_top1)),
                   "mean_abs_logit_diff": float(np.mean(np.abs(logits - reference))),
                   "max_abs_logit_diff": float(np.max(np.abs(logits - reference)))}
        scored.append((candidate, figures))
    best = max(scored, key=lambda item: (item[1]["top1_agreement"],
                                         -item[1]["mean_abs_logit_diff"]))
    return best[0], {candidate.weight_granularity: figures for candidate, figures in scored}


def _manifest(model: nn.Module, *, phase: int, classes: list[str], sample_rate: int,
              clip_samples: int, n_calibration: int, n_holdout: int, chosen: QuantizedModel,
              candidates: dict[str, dict[str, float]], fp32_figures: dict,
              int8_figures: dict) -> dict[str, Any]:
    """Everything but the file table (added when the files exist)."""
    from models.profile import count_parameters, macs_breakdown

    frontend = dict(model.frontend.config.to_dict(), stft_impl=model.frontend.stft_impl)
    config = model.model_config() if hasattr(model, "model_config") else {}
    macs = macs_breakdown(model, clip_samples)
    return {
        "format": MANIFEST_FORMAT,
        "phase": int(phase),
        "classes": classes,
        "n_classes": len(classes),
        "sample_rate": sample_rate,
        "clip_samples": clip_samples,
        "clip_seconds": clip_samples / sample_rate,
        "frontend": frontend,
        "model": {"name": config.get("name"), "width": config.get("width"),
                  "parameters": count_parameters(model), "macs_per_clip": macs["total"],
                  "macs_breakdown": macs},
        "onnx": {"opset": OPSET, "input": INPUT_NAME, "output": OUTPUT_NAME,
                 "input_shape": ["batch", clip_samples], "output_shape": ["batch", len(classes)]},
        "quantization": {"format": "QDQ", "weights": "int8 symmetric",
                         "activations": "int8 asymmetric", "reduce_range": REDUCE_RANGE,
                         "calibration": {"method": "MinMax", "clips": n_calibration},
                         "weight_granularity": chosen.weight_granularity,
                         "float_front_end": True,
                         "float_nodes": chosen.float_nodes,
                         "candidates_vs_fp32_on_calibration": candidates},
        "parity": {"holdout_clips": n_holdout, "bounds": parity.bounds(),
                   "fp32_vs_torch": fp32_figures, "int8_vs_fp32": int8_figures},
        "versions": {"edgecl": __version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def write_bundle(out_dir: Path, files: dict[str, bytes],
                 manifest: dict[str, Any]) -> dict[str, Any]:
    """Write `files` plus manifest.json (with their sizes and sha256) into `out_dir` atomically.

    Returns the manifest as written (with its "files" table).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        manifest = dict(manifest, files=file_entries(staging, files))
        atomic_write_json(staging / MANIFEST, manifest)
        _publish_permissions(staging, [*files, MANIFEST])
        if out_dir.exists():
            _carry_over(out_dir, staging, keep=set(files) | {MANIFEST})
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _publish_permissions(folder: Path, names: list[str]) -> None:
    """Temp files and folders are private (0600/0700); give the bundle the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for name in names:
        (folder / name).chmod(0o666 & ~umask)


def _carry_over(old: Path, staging: Path, keep: set[str]) -> None:
    """Hard-link (or copy) the old folder's other entries (checkpoint.pt) into the staging one."""
    for entry in old.iterdir():
        if entry.name in keep or entry.name in BUNDLE_FILES:
            continue
        target = staging / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Rename staging to out_dir, moving an existing out_dir aside first and deleting it after."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.rmdir(retired)
    os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(retired, out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)
