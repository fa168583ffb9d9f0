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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgecl.audio import fit_length, read_audio
from edgecl.errors import EdgeclError
from firmware_export.device.layout import (
    INPUT_NAME,
    LABELS,
    MANIFEST,
    META_CLIP_SAMPLES,
    META_LABELS,
    META_SAMPLE_RATE,
)
from firmware_export.device.manifest import read_manifest, refuse_withheld, verify_bundle
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
        logits: np.ndarray = self.session.run(None, {INPUT_NAME: batch})[0]
        return logits


@dataclass(frozen=True)
class Prediction:
    """Top-k labels with softmax scores for one clip."""

    clip: str
    labels: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"clip": self.clip, "predictions": [
            {"label": label, "score": score}
            for label, score in zip(self.labels, self.scores, strict=True)]}


def cpu_session(model: bytes | str, threads: int = 1) -> ort.InferenceSession:
    """Sequential CPU ONNX Runtime session on model bytes or a path, `threads` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


MAX_SAMPLE_RATE = 384_000
MAX_CLIP_SECONDS = 600


def load_model(path: str | os.PathLike[str], *, threads: int = 1, bare: bool = False) -> LoadedModel:
    """Open a model file or a bundle folder with ONNX Runtime (CPU, `threads` intra-op threads).

    In a bundle (a manifest.json beside the file, listing it) every bundle file is verified
    against its sha256 first, and the manifest's labels, sample rate and clip length must equal
    the ones the model file carries in its own metadata. A model exported by edgecl whose manifest
    is missing is refused unless `bare` is set: then the model file alone is trusted and its
    metadata describes it. Raises EdgeclError naming the file for every fault.
    """
    path = Path(path)
    refuse_withheld(path)
    if path.is_dir():
        path = device_model_path(path)
    if not path.is_file():
        raise EdgeclError(f"{path}: model file not found")
    manifest = None if bare else _bundle_manifest(path)
    try:
        session = cpu_session(str(path), threads)
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph types
        detail = " ".join(str(error).split())[:200]
        raise EdgeclError(f"{path}: not a loadable ONNX model ({detail})") from None
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [INPUT_NAME]:
        raise EdgeclError(f"{path}: expected one input named {INPUT_NAME!r}, found {inputs}")
    labels, sample_rate, clip_samples = _metadata(path, session)
    if manifest is None and not bare:
        raise EdgeclError(f"{path}: exported by edgecl as part of a bundle, but no {MANIFEST} is "
                          f"beside it to verify it; restore the bundle's {MANIFEST}, or pass "
                          f"--bare to run the model file alone, unverified")
    if manifest is not None:
        _check_against_manifest(path, manifest, labels, sample_rate, clip_samples)
    n_outputs = session.get_outputs()[0].shape[-1]
    if isinstance(n_outputs, int) and n_outputs != len(labels):
        raise EdgeclError(f"{path}: the model has {n_outputs} outputs but {len(labels)} labels")
    n_samples = session.get_inputs()[0].shape[-1]
    if isinstance(n_samples, int) and n_samples != clip_samples:
        raise EdgeclError(f"{path}: the model takes {n_samples} samples but its metadata says "
                          f"{clip_samples}")
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


def _bundle_manifest(path: Path) -> dict[str, Any] | None:
    """The verified manifest of the bundle `path` belongs to, or None when none is beside it."""
    manifest_path = path.parent / MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = verify_bundle(path.parent)
    if path.name not in manifest["files"]:
        raise EdgeclError(f"{path}: not listed in the bundle manifest {manifest_path}")
    return manifest


def _check_against_manifest(path: Path, manifest: dict[str, Any], labels: list[str],
                            sample_rate: int, clip_samples: int) -> None:
    """The manifest and labels.json are hashed, but their runtime fields could still disagree
    with the model (a hand-edited manifest with fresh hashes): refuse to run on a mismatch."""
    bundle_labels = _read_labels(path.parent / LABELS)
    for field_name, bundle_value, model_value in (
            ("sample_rate", manifest.get("sample_rate"), sample_rate),
            ("clip_samples", manifest.get("clip_samples"), clip_samples),
            ("classes", manifest.get("classes"), labels),
            (LABELS, bundle_labels, labels)):
        if bundle_value != model_value:
            raise EdgeclError(f"{path.parent / MANIFEST}: {field_name} {bundle_value!r} does not "
                              f"match {path.name}'s own {model_value!r}; the bundle was edited, "
                              f"re-export it")


def _read_labels(path: Path) -> list[str]:
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EdgeclError(f"{path}: unreadable labels file ({error})") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise EdgeclError(f"{path}: expected a JSON list of class names")
    return labels


def _metadata(path: Path, session: ort.InferenceSession) -> tuple[list[str], int, int]:
    """(labels, sample rate, clip samples) from the model's own metadata, checked for sense."""
    meta = session.get_modelmeta().custom_metadata_map
    try:
        labels = json.loads(meta[META_LABELS])
        sample_rate, clip_samples = int(meta[META_SAMPLE_RATE]), int(meta[META_CLIP_SAMPLES])
    except (KeyError, ValueError, TypeError):
        raise EdgeclError(f"{path}: no edgecl metadata (labels, sample rate, clip length) inside; "
                          f"expected a model exported by edgecl") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise EdgeclError(f"{path}: metadata {META_LABELS} must be a non-empty list of names")
    if not 1 <= sample_rate <= MAX_SAMPLE_RATE:
        raise EdgeclError(f"{path}: metadata {META_SAMPLE_RATE} {sample_rate} is not a sample "
                          f"rate in [1, {MAX_SAMPLE_RATE}] Hz")
    if not 1 <= clip_samples <= MAX_CLIP_SECONDS * sample_rate:
        raise EdgeclError(f"{path}: metadata {META_CLIP_SAMPLES} {clip_samples} is not a clip "
                          f"length in [1, {MAX_CLIP_SECONDS} s x the sample rate] samples")
    return labels, sample_rate, clip_samples


def read_clip(path: str | os.PathLike[str], sample_rate: int, clip_samples: int) -> np.ndarray:
    """A WAV (any rate, any channel count) as float32 [clip_samples] mono at `sample_rate`."""
    samples, native_rate = read_audio(path)
    mono = samples.mean(axis=0, dtype=np.float32)
    mono = resample(mono, native_rate, sample_rate)
    clip: np.ndarray = np.clip(fit_length(mono, clip_samples), -1.0, 1.0).astype(np.float32,
                                                                                copy=False)
    return clip


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def classify(model: LoadedModel, clips: Sequence[str | os.PathLike[str]],
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
