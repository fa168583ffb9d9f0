"""export_phase: one trained phase -> a verified device bundle folder, written atomically.

Every phase ships its fp32 model when fp32 parity holds (a miss there is a bug: ParityError, nothing
written). The int8 model is a second artifact with its own verdict: an accuracy-aware search
(firmware_export.int8_search) looks for a candidate that meets the int8 rule; if none does, the
int8 file is withheld and the manifest says why. The device model (`device_model` in the manifest,
embedded in model.h, run by `edgecl infer BUNDLE`) is the int8 one when shipped, else the fp32 one.

The bundle (`model.onnx`, `model.int8.onnx` when shipped, `labels.json`, `model.h`,
`manifest.json`) is written atomically by firmware_export.bundle_folder, together with any
withheld build, kept for diagnosis under `withheld/<artifact>/` and listed nowhere in the
manifest (`withheld_builds`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from edgecl import __version__
from edgecl.budget.ram import rss_stage
from edgecl.errors import EdgeclError
from edgecl.provenance import provenance
from edgecl.samplers.base import evenly_spaced
from edgecl.targets import TARGETS
from firmware_export import parity
from firmware_export.analytic_fit import AnalyticFit, fit_phase_state
from firmware_export.bundle_folder import write_bundle
from firmware_export.c_header import render_c_header
from firmware_export.device.head_graph import embedding_model, trained_head
from firmware_export.device.layout import (
    C_HEADER,
    EMBEDDING_NAME,
    INPUT_NAME,
    LABELS,
    MANIFEST_FORMAT,
    MODEL_EMBEDDING,
    MODEL_FP32,
    MODEL_INT8,
    MODEL_TFLM,
    MODEL_TFLM_EMBEDDING,
    OUTPUT_NAME,
    WITHHELD_DIR,
    WITHHELD_REPORT,
)
from firmware_export.device.runtime import cpu_session
from firmware_export.export import OPSET, serialize
from firmware_export.export_process import export_onnx_in_child
from firmware_export.held_clips import HeldClips
from firmware_export.int8_search import SearchResult, search_int8
from firmware_export.quantize import REDUCE_RANGE
from firmware_export.tflm.limits import DeviceLimits

# MinMax ranges settle after a hundred-odd clips; more only costs calibration time.
MAX_CALIBRATION_CLIPS = 128


def export_phase(model: nn.Module, out_dir: str | os.PathLike, *, phase: int,
                 classes: Sequence[str], calibration_waveforms: np.ndarray,
                 holdout_waveforms: np.ndarray, holdout_targets: Sequence[int],
                 holdout_counts: dict[str, int] | None = None,
                 extra_manifest: dict[str, Any] | None = None,
                 log: Callable[[str], None] | None = None, target: str = "onnx",
                 tflm_window_seconds: float | None = None, limits: DeviceLimits | None = None,
                 progress: Callable[[str], None] | None = None,
                 analytic: AnalyticFit | None = None) -> dict[str, Any]:
    """Export a SoundClassifier after `phase` to the bundle folder `out_dir`; returns the manifest.

    `classes` are the names of the model's outputs in order; `calibration_waveforms` [N, T] and
    `holdout_waveforms` [M, T] float32 clips of seen classes only (T = the model's clip length),
    `holdout_targets` [M] their label ids; the two sets must not share clips. At most
    MAX_CALIBRATION_CLIPS calibration clips are used, evenly spaced over the given order. Parity is
    checked on the held-out clips (`holdout_counts`, e.g. {"validation": 16, "test": 40}, says what
    they are, for the manifest). An fp32 miss raises parity.ParityError naming the figures and
    leaves `out_dir` untouched; an int8 miss withholds model.int8.onnx only. `extra_manifest`
    entries (e.g. the run's dataset and method) are stored under "run"; `log` gets a summary.

    `target` "tflm" adds the TFLM build (firmware_export.tflm.build: model.tflm.tflite, its C
    header, the C front end and test vectors, and the manifest's "tflm" section), calibrated on
    the same clips; a miss of its rule withholds those files only. `tflm_window_seconds` is its
    window (None: auto, 0: the whole clip; firmware_export.device.windows), `limits` its arena
    and flatbuffer ceilings (a build over one is withheld).

    A withheld build (int8 ONNX or TFLM) is kept for diagnosis in `out_dir`/withheld/<artifact>/
    with a report (WITHHELD_REPORT: the reason, the figures, for int8 the per-layer errors),
    never listed in the manifest. `progress` is told each step as it starts. `analytic` gives
    the bundle its head's analytic state (firmware_export.analytic_fit); the fit's seconds are in
    the returned manifest's "cost", not in the file.
    """
    step = progress or (lambda text: None)
    _check_target(target)
    classes = [str(name) for name in classes]
    calibration, holdout, targets = _checked_clips(phase, classes, calibration_waveforms,
                                                   holdout_waveforms, holdout_targets)
    clip_samples, sample_rate = holdout.shape[1], int(model.frontend.config.sample_rate)

    was_training = model.training
    model.eval()
    try:
        step("fp32 export and parity")
        fp32, fp32_bytes, fp32_runner, fp32_figures = _checked_fp32(
            model, phase, out_dir, classes, clip_samples, holdout, targets)
        # the fp32 check does not use the calibration clips: float32 only from here on
        calibration = np.asarray(calibration, dtype=np.float32)
        search = search_int8(fp32, fp32_runner, calibration, holdout, targets, log=log,
                             progress=step)
        manifest = _manifest(model, phase=phase, classes=classes, sample_rate=sample_rate,
                             clip_samples=clip_samples, n_calibration=len(calibration),
                             n_holdout=len(holdout), holdout_counts=holdout_counts,
                             search=search, fp32_figures=fp32_figures)
        tflm = _tflm_build(model, phase, classes, calibration, holdout, targets, fp32_runner,
                           tflm_window_seconds, limits, step) if target == "tflm" else None
        if tflm is not None:
            manifest["tflm"] = tflm.section
    finally:
        model.train(was_training)
    if extra_manifest:
        manifest["run"] = dict(extra_manifest)
    step("embedding model check")
    embedding_bytes, manifest["embedding"], held = _embedding_model(fp32, fp32_runner, holdout,
                                                                    phase)
    files = _bundle_files(manifest, classes, fp32_bytes, embedding_bytes, search, sample_rate,
                          clip_samples)
    seconds = _analytic_state(analytic, files, manifest, fp32, held, targets, step,
                              tflm_files=tflm.files if tflm is not None else {})
    written = _write_phase_bundle(out_dir, files, manifest, search, tflm, step, log)
    return written if seconds is None else dict(written, cost={"analytic_fit_seconds": seconds})


def _analytic_state(analytic: AnalyticFit | None, files: dict[str, bytes],
                    manifest: dict[str, Any], fp32: onnx.ModelProto, held: np.ndarray,
                    targets: np.ndarray, step: Callable[[str], None],
                    tflm_files: dict[str, bytes]) -> float | None:
    """Add the head's analytic state to the bundle's `files` and `manifest` (its section), its
    C head's blob too when `tflm_files` (the TFLM build's, if it ships) hold an embedding model;
    returns the fit's seconds (None without `analytic`)."""
    if analytic is None:
        return None
    step("analytic state")
    classes = manifest["classes"]
    outcome = fit_phase_state(
        analytic, files[MODEL_EMBEDDING], classes, holdout_embeddings=held,
        holdout_labels=[classes[t] for t in targets], trained=trained_head(fp32),
        backbone_sha256=hashlib.sha256(files[MODEL_EMBEDDING]).hexdigest(),
        bundle_files=[*files, *tflm_files])
    files.update(outcome.files)
    manifest["analytic"] = outcome.section
    return outcome.seconds


def _write_phase_bundle(out_dir, files: dict[str, bytes], manifest: dict[str, Any],
                        search: SearchResult, tflm, step: Callable[[str], None],
                        log: Callable[[str], None] | None) -> dict[str, Any]:
    """Write the bundle (the TFLM files too when it ships) with any withheld build kept for
    diagnosis; `log` gets the summary line. Returns the manifest as written."""
    files.update(tflm.files if tflm is not None else {})
    withheld = withheld_builds(manifest, search, tflm)
    if withheld:
        manifest["withheld_dir"] = WITHHELD_DIR
    step("writing the bundle")
    manifest = write_bundle(Path(out_dir), files, manifest, withheld)
    if log is not None:
        log(summary_line(manifest, out_dir))
    return manifest


def _tflm_build(model: nn.Module, phase: int, classes: list[str], calibration: np.ndarray,
                holdout: np.ndarray, targets: np.ndarray, fp32_runner,
                window_seconds: float | None, limits: DeviceLimits | None,
                step: Callable[[str], None]):
    """The phase's TFLM build (firmware_export.tflm.build), calibrated on the same clips; its
    conversions run in a child process (the converter stack never loads in this one)."""
    from firmware_export.tflm.build import build_tflm
    from firmware_export.tflm.converter_process import ConversionFailed, ConverterProcess

    step("TFLM build")
    try:
        with ConverterProcess() as converter:
            return build_tflm(model, classes=classes,
                              sample_rate=int(model.frontend.config.sample_rate),
                              clip_samples=holdout.shape[1], calibration_waveforms=calibration,
                              holdout_waveforms=holdout, holdout_targets=targets,
                              fp32_runner=fp32_runner, window_seconds=window_seconds,
                              limits=limits, progress=step, converter=converter)
    except ConversionFailed as error:
        raise EdgeclError(f"export phase {phase}: {error}") from error


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise EdgeclError(f"--target: expected one of {', '.join(TARGETS)}, got {target!r}")
    if target == "tflm":
        from firmware_export.tflm import require_toolchain

        require_toolchain()


def _checked_clips(phase: int, classes: list[str], calibration_waveforms, holdout_waveforms,
                   holdout_targets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration clips, at most MAX_CALIBRATION_CLIPS evenly spaced; held-out clips; their
    targets), checked to be clips of one length with targets among `classes`."""
    calibration = _waveforms(calibration_waveforms, "calibration_waveforms")
    if len(calibration) > MAX_CALIBRATION_CLIPS:  # else all of them, not a copy (0.1 GB at 44.1 kHz)
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
    return calibration, holdout, targets


def _checked_fp32(model: nn.Module, phase: int, out_dir, classes: list[str], clip_samples: int,
                  holdout: np.ndarray, targets: np.ndarray):
    """The fp32 ONNX graph of `model`, its bytes, its ONNX Runtime runner and its parity figures
    against torch on the held-out clips; parity.ParityError when they miss the fp32 rule."""
    # in a child process: the exporter leaves about 0.22 GB resident in the process that runs it
    fp32 = export_onnx_in_child(model, labels=classes,
                                sample_rate=int(model.frontend.config.sample_rate),
                                clip_samples=clip_samples)
    fp32_bytes = serialize(fp32)
    fp32_session = cpu_session(fp32_bytes)
    n_outputs = fp32_session.get_outputs()[0].shape[-1]
    if n_outputs != len(classes):
        raise EdgeclError(f"export phase {phase}: the model has {n_outputs} outputs but "
                          f"{len(classes)} class names were given")
    # every batch of held-out clips computed once for the phase (the search and the TFLM
    # builds ask for the batch-1 logits again, the embedding check for the batch-32 ones)
    fp32_runner = parity.MemoRunner(parity.ort_runner(fp32_session))
    rss_stage("fp32 export and parity: parity against torch")
    fp32_figures = parity.measure(parity.torch_runner(model), fp32_runner, holdout, targets)
    fp32_failures = parity.fp32_failures(fp32_figures)
    if fp32_failures:
        raise parity.ParityError(f"export phase {phase} to {out_dir}: fp32 parity check "
                                 f"failed: " + "; ".join(fp32_failures),
                                 {"fp32_vs_torch": fp32_figures})
    return fp32, fp32_bytes, fp32_runner, fp32_figures


def _bundle_files(manifest: dict[str, Any], classes: list[str], fp32_bytes: bytes,
                  embedding_bytes: bytes, search: SearchResult, sample_rate: int,
                  clip_samples: int) -> dict[str, bytes]:
    """The ONNX files that ship (model.int8.onnx only when it meets its bound), the labels and
    the C header of the device model."""
    files = {MODEL_FP32: fp32_bytes, MODEL_EMBEDDING: embedding_bytes,
             LABELS: (_json_text(classes)).encode("utf-8")}
    if search.meets_bound:
        files[MODEL_INT8] = serialize(search.model.proto)
    device_name = manifest["device_model"]
    files[C_HEADER] = render_c_header(files[device_name], classes, sample_rate=sample_rate,
                                      clip_samples=clip_samples,
                                      precision=_PRECISION[device_name]).encode("utf-8")
    return files


_PRECISION = {MODEL_FP32: "fp32", MODEL_INT8: "int8"}
WITHHELD_NOTE = ("kept for diagnosis only: this build missed its shipping rule; it is not a "
                 "bundle and edgecl infer refuses it")


def withheld_builds(manifest: dict[str, Any], search: SearchResult, tflm) -> dict[str, bytes]:
    """The withheld builds' files, by path under WITHHELD_DIR: each artifact's model file and
    its report (why, the figures; for int8 the search's layer-by-layer diagnosis)."""
    files: dict[str, bytes] = {}
    common = {"note": WITHHELD_NOTE, "phase": manifest["phase"], "classes": manifest["classes"],
              "sample_rate": manifest["sample_rate"], "clip_samples": manifest["clip_samples"],
              "holdout_clips": manifest["parity"]["holdout_clips"]}
    if not search.meets_bound:
        int8 = manifest["artifacts"]["int8"]
        report = {**common, "artifact": "int8", "file": MODEL_INT8, "reason": int8["reason"],
                  "parity_vs_fp32": int8["parity_vs_fp32"],
                  "quantization": int8["quantization"], "diagnosis": search.diagnosis}
        files[f"int8/{MODEL_INT8}"] = serialize(search.model.proto)
        files[f"int8/{WITHHELD_REPORT}"] = _json_text(report).encode("utf-8")
    if tflm is not None and not tflm.shipped:
        report = {**common, "artifact": "tflm", **tflm.section}
        files[f"tflm/{MODEL_TFLM}"] = tflm.model
        files[f"tflm/{WITHHELD_REPORT}"] = _json_text(report).encode("utf-8")
    embedding = getattr(tflm, "embedding", None)
    if embedding is not None and not embedding.shipped:
        report = {**common, "artifact": "tflm_embedding", **embedding.section}
        files[f"tflm_embedding/{MODEL_TFLM_EMBEDDING}"] = embedding.model
        files[f"tflm_embedding/{WITHHELD_REPORT}"] = _json_text(report).encode("utf-8")
    return files


def summary_line(manifest: dict[str, Any], out_dir: str | os.PathLike) -> str:
    """One line with the parity figures at the largest batch, for the run log."""
    fp32, int8 = manifest["artifacts"]["fp32"], manifest["artifacts"]["int8"]
    batch = max(fp32["parity_vs_torch"], key=lambda name: int(name.split("_")[1]))
    fp32_figures, int8_figures = fp32["parity_vs_torch"][batch], int8["parity_vs_fp32"][batch]
    search = int8["quantization"]["search"]
    recipe = search["recipe"]
    int8_text = (f"int8 {int8['status'].upper()} ({recipe['weights']}, {recipe['calibration']}, "
                 f"{100 * search['float_share_of_backbone_macs']:.0f}% of backbone MACs float, "
                 f"candidate {search['candidates_tried']}): top-1 agreement "
                 f"{100 * int8_figures['top1_agreement']:.1f}%, accuracy "
                 f"{int8_figures['accuracy']:.1f}% vs {int8_figures['accuracy_reference']:.1f}%")
    if int8["status"] != "shipped":
        int8_text += f" [{int8['reason']}]"
    sizes = f"{manifest['files'][MODEL_FP32]['bytes'] / 1024:.0f} KiB fp32"
    if MODEL_INT8 in manifest["files"]:
        sizes += f", {manifest['files'][MODEL_INT8]['bytes'] / 1024:.0f} KiB int8"
    line = (f"  export phase {manifest['phase']} -> {out_dir} on "
            f"{manifest['parity']['holdout_clips']} held-out clips: fp32 shipped, max |logit "
            f"diff| {fp32_figures['max_abs_logit_diff']:.2g}; {int8_text}; {sizes}")
    if "tflm" in manifest:
        line += "; " + tflm_summary(manifest["tflm"])
    if "withheld_dir" in manifest:
        line += f"; withheld build(s) kept for diagnosis in {Path(out_dir) / WITHHELD_DIR}"
    return line


def tflm_summary(section: dict[str, Any]) -> str:
    """The TFLM build's verdict and figures in one phrase."""
    figures = section["parity_vs_fp32"]["batch_1"]
    window = section.get("window", {})
    windows = (f" ({window['per_clip']} windows of {window['seconds']:g} s, pooled)"
               if window.get("per_clip", 1) > 1 else "")
    recipe = section.get("recipe", {}).get("name", "int8")  # the TFLM recipe search's pick
    text = (f"TFLM {recipe} {section['status'].upper()}{windows}: top-1 agreement "
            f"{100 * figures['top1_agreement']:.1f}%, accuracy {figures['accuracy']:.1f}% vs "
            f"{figures['accuracy_reference']:.1f}%, {section['bytes'] / 1024:.0f} KiB, arena "
            f"{section['arena_bytes'] / 1024:.0f} KiB, {section['float_ops']} float ops")
    embedding = section.get("embedding")
    if embedding is not None:
        text += (f"; embedding model {embedding['status'].upper()}, "
                 f"{embedding['bytes'] / 1024:.0f} KiB, arena "
                 f"{embedding['arena_bytes'] / 1024:.0f} KiB"
                 + (f" [{embedding['reason']}]" if embedding["reason"] else ""))
    return text + (f" [{section['reason']}]" if section["reason"] else "")


# The embedding model is the fp32 graph without its last node: the head's Gemm on the embedding
# must give the fp32 model's logits up to float rounding.
EMBEDDING_TOLERANCE = 1e-4


def _embedding_model(fp32: onnx.ModelProto, fp32_runner, holdout: np.ndarray,
                     phase: int) -> tuple[bytes, dict[str, Any], np.ndarray]:
    """model.embedding.onnx (waveform -> embedding: the fp32 model cut before its head, for the
    analytic head, firmware_export.device.learn), its manifest section and the held-out clips'
    embeddings, on which it is checked: through the trained head's weights they give the fp32
    logits."""
    embedding = serialize(embedding_model(fp32))
    weight, bias = trained_head(fp32)
    run = parity.ort_runner(cpu_session(embedding))  # its arena handed back after each batch
    # the batches of the fp32 check (parity.batched), whose fp32 logits fp32_runner keeps; cut
    # one at a time (the held-out clips may be held as 16-bit codes, HeldClips)
    held, difference = [], 0.0
    for start in range(0, len(holdout), parity.LARGE_BATCH):
        batch = holdout[start:start + parity.LARGE_BATCH]
        held.append(run(batch))
        difference = max(difference,
                         float(np.max(np.abs(held[-1] @ weight + bias - fp32_runner(batch)))))
    if not difference <= EMBEDDING_TOLERANCE:
        raise EdgeclError(f"export phase {phase}: the embedding model through the head differs "
                          f"from the fp32 model by {difference:.2g} (> {EMBEDDING_TOLERANCE:g})")
    return embedding, {"file": MODEL_EMBEDDING, "output": EMBEDDING_NAME,
                       "dim": int(weight.shape[0]), "max_abs_logit_diff": difference}, \
        np.vstack(held)


def _waveforms(array, name: str):
    """`array` as float32 [clips, samples]; HeldClips as they are (they hand out float32)."""
    waveforms = array if isinstance(array, HeldClips) else np.ascontiguousarray(array,
                                                                                dtype=np.float32)
    if waveforms.ndim != 2 or len(waveforms) == 0 or waveforms.shape[1] == 0:
        raise EdgeclError(f"export: {name} must be a non-empty [clips, samples] array, got shape "
                          f"{tuple(waveforms.shape)}")
    return waveforms


def _manifest(model: nn.Module, *, phase: int, classes: list[str], sample_rate: int,
              clip_samples: int, n_calibration: int, n_holdout: int,
              holdout_counts: dict[str, int] | None, search: SearchResult,
              fp32_figures: dict) -> dict[str, Any]:
    """Everything but the file table (added when the files exist)."""
    from models.profile import count_parameters, macs_breakdown

    frontend = model.frontend.config.to_dict()  # stft_impl included
    config = model.model_config() if hasattr(model, "model_config") else {}
    macs = macs_breakdown(model, clip_samples)
    int8_shipped = search.meets_bound
    return {
        "format": MANIFEST_FORMAT,
        "phase": int(phase),
        "classes": classes,
        "n_classes": len(classes),
        "sample_rate": sample_rate,
        "clip_samples": clip_samples,
        "clip_seconds": clip_samples / sample_rate,
        "device_model": MODEL_INT8 if int8_shipped else MODEL_FP32,
        "frontend": frontend,
        "model": {"name": config.get("name"), "width": config.get("width"),
                  "parameters": count_parameters(model), "macs_per_clip": macs["total"],
                  "macs_breakdown": macs},
        "onnx": {"opset": OPSET, "input": INPUT_NAME, "output": OUTPUT_NAME,
                 "input_shape": ["batch", clip_samples], "output_shape": ["batch", len(classes)]},
        "artifacts": {
            "fp32": {"file": MODEL_FP32, "status": "shipped", "parity_vs_torch": fp32_figures},
            "int8": {"file": MODEL_INT8, "status": "shipped" if int8_shipped else "withheld",
                     "reason": None if int8_shipped else "; ".join(search.failures),
                     "parity_vs_fp32": search.figures,
                     "quantization": {"format": "QDQ", "weights": "int8 symmetric",
                                      "activations": f"{search.model.recipe.activations} "
                                                     f"asymmetric",
                                      "reduce_range": REDUCE_RANGE,
                                      "calibration_clips": n_calibration,
                                      "float_front_end": True,
                                      "float_nodes": search.model.float_nodes,
                                      "search": search.record()}},
        },
        "parity": {"holdout_clips": n_holdout, "holdout": dict(holdout_counts or {}),
                   "bounds": parity.bounds()},
        "versions": {"edgecl": __version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        # The CPU matters: parity was measured with this machine's ONNX Runtime kernels.
        "provenance": provenance(threads=torch.get_num_threads()),
    }


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
