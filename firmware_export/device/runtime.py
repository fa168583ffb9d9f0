"""Run an exported model on WAV files with numpy, soundfile and onnxruntime only (no torch).

`load_model` opens a model file or a bundle folder (its device model); when a file sits in a
bundle (a manifest.json beside it listing it), every bundle file is verified against its sha256 first and the labels come from labels.json;
a lone model file describes itself through its ONNX metadata. `read_clip` prepares audio the way
training did (channels averaged, resampled with the same windowed-sinc filter as torchaudio,
cropped or zero-padded at the end, clipped to [-1, 1]). `classify` returns the top-k labels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from edgecl.audio import fit_length, read_audio
from edgecl.errors import EdgeclError
from firmware_export.device.layout import (INPUT_NAME, LABELS, MANIFEST, META_CLIP_SAMPLES,
                                           META_LABELS, META_SAMPLE_RATE)
from firmware_export.device.manifest import read_manifest, verify_bundle
from firmware_export.device.resample import resample


@dataclass
class LoadedModel:
    """An ONNX Runtime session plus what is needed to feed it and name its outputs."""

    path: Path
    session: ort.InferenceSession
    labels: list[str]
    sample_rate: int
    clip_samples: int
    manifest: dict[str, Any] | None = field(default=None, repr=False)

    def logits(self, waveforms: np.ndarray) -> np.ndarray:
        """waveforms [B, clip_samples] float32 -> logits [B, n_labels]."""
        batch = np.ascontiguousarray(waveforms, dtype=np.float32)
        return self.session.run(None, {INPUT_NAME: batch})[0]


@dataclass(frozen=True)
class Prediction:
    """Top-k labels with softmax scores for one clip."""

    clip: str
    labels: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"clip": self.clip, "predictions": [
            {"label": label, "score": score} for label, score in zip(self.labels, self.scores)]}


def cpu_session(model: bytes | str, threads: int = 1) -> ort.InferenceSession:
    """Sequential CPU ONNX Runtime session on model bytes or a path, `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_model(path: str | os.PathLike, *, threads: int = 1, verify: bool = True) -> LoadedModel:
    """Open `path` with ONNX Runtime (CPU, `threads` intra-op threads).

    If a manifest.json in the same folder lists the file, the bundle is verified (sha256 of every
    file) unless `verify` is False, and labels, sample rate and clip length come from the bundle.
    Raises EdgeclError for a missing file, a file that is not ONNX, or a bundle that fails
    verification.
    """
    path = Path(path)
    if path.is_dir():
        path = device_model_path(path)
    if not path.is_file():
        raise EdgeclError(f"{path}: model file not found")
    manifest = _bundle_manifest(path, verify)
    try:
        session = cpu_session(str(path), threads)
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph types
        detail = " ".join(str(error).split())[:200]
        raise EdgeclError(f"{path}: not a loadable ONNX model ({detail})") from None
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [INPUT_NAME]:
        raise EdgeclError(f"{path}: expected one input named {INPUT_NAME!r}, found {inputs}")
    if manifest is not None:
        labels = _read_labels(path.parent / LABELS)
        sample_rate, clip_samples = int(manifest["sample_rate"]), int(manifest["clip_samples"])
    else:
        labels, sample_rate, clip_samples = _metadata(path, session)
    n_outputs = session.get_outputs()[0].shape[-1]
    if isinstance(n_outputs, int) and n_outputs != len(labels):
        raise EdgeclError(f"{path}: the model has {n_outputs} outputs but {len(labels)} labels")
    return LoadedModel(path=path, session=session, labels=labels, sample_rate=sample_rate,
                       clip_samples=clip_samples, manifest=manifest)


def device_model_path(folder: Path) -> Path:
    """The model a bundle folder ships for devices: its manifest's `device_model` (the int8 model
    when its parity rule held, else the fp32 one)."""
    if not (folder / MANIFEST).is_file():
        raise EdgeclError(f"{folder}: a folder, but not a bundle (no {MANIFEST}); give a bundle "
                          f"folder (WORKSPACE/RUN/phase_<i>) or a model file")
    name = read_manifest(folder).get("device_model")
    if not isinstance(name, str) or Path(name).name != name:
        raise EdgeclError(f"{folder / MANIFEST}: expected a 'device_model' file name, got {name!r}")
    return folder / name


def _bundle_manifest(path: Path, verify: bool) -> dict[str, Any] | None:
    manifest_path = path.parent / MANIFEST
    if not manifest_path.is_file():
        return None
    if not verify:
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest = verify_bundle(path.parent)
    if path.name not in manifest["files"]:
        raise EdgeclError(f"{path}: not listed in the bundle manifest {manifest_path}")
    return manifest


def _read_labels(path: Path) -> list[str]:
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EdgeclError(f"{path}: unreadable labels file ({error})") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise EdgeclError(f"{path}: expected a JSON list of class names")
    return labels


def _metadata(path: Path, session: ort.InferenceSession) -> tuple[list[str], int, int]:
    meta = session.get_modelmeta().custom_metadata_map
    try:
        labels = json.loads(meta[META_LABELS])
        return [str(label) for label in labels], int(meta[META_SAMPLE_RATE]), \
            int(meta[META_CLIP_SAMPLES])
    except (KeyError, ValueError, TypeError):
        raise EdgeclError(f"{path}: no bundle manifest beside it and no edgecl metadata (labels, "
                          f"sample rate, clip length) inside; expected a model exported by edgecl"
                          ) from None


def read_clip(path: str | os.PathLike, sample_rate: int, clip_samples: int) -> np.ndarray:
    """A WAV (any rate, any channel count) as float32 [clip_samples] mono at `sample_rate`."""
    samples, native_rate = read_audio(path)
    mono = samples.mean(axis=0, dtype=np.float32)
    mono = resample(mono, native_rate, sample_rate)
    return np.clip(fit_length(mono, clip_samples), -1.0, 1.0).astype(np.float32, copy=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def classify(model: LoadedModel, clips: Sequence[str | os.PathLike],
             top_k: int = 3) -> list[Prediction]:
    """Top-k predictions for each clip, one batch-1 run per clip (the device setting)."""
    if top_k < 1:
        raise EdgeclError(f"--top-k: expected a positive integer, got {top_k}")
    k = min(top_k, len(model.labels))
    predictions = []
    for clip in clips:
        waveform = read_clip(clip, model.sample_rate, model.clip_samples)
        scores = softmax(model.logits(waveform[None, :]))[0]
        order = np.argsort(-scores, kind="stable")[:k]
        predictions.append(Prediction(clip=str(clip), labels=[model.labels[i] for i in order],
                                      scores=[round(float(scores[i]), 6) for i in order]))
    return predictions
