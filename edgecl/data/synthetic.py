"""The embedded default dataset: procedurally generated environmental sounds.

Each clip is one foreground sound from a parametric family (edgecl.data.sounds) mixed over
coloured background noise at a random SNR (0-20 dB), sometimes with mains hum and a quieter
interfering sound of another class, then scaled to a random level. 16 kHz, 1 s, 16-bit WAV.

Every clip has its own random stream keyed by (seed, class, split, index), so a dataset is
deterministic for a seed and growing `clips_per_class` only adds clips. The files and a
`manifest.csv` (path,label,split) go to WORKSPACE/data/synthetic-<hash of the parameters>/; the
folder is built under a temporary name and renamed into place, so it exists only when complete,
and a complete folder is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from edgecl.data.manifest import load_manifest
from edgecl.data.records import DatasetSplit
from edgecl.data.sounds import FAMILIES, coloured_noise
from edgecl.errors import EdgeclError
from edgecl.fileio import staging_folder

NAME = "synthetic"
SAMPLE_RATE = 16000
CLIP_SECONDS = 1.0
CLIPS_PER_CLASS = 100
TEST_FRACTION = 0.2
# Bump when the synthesis changes so old folders are not reused for new parameters.
GENERATOR_VERSION = 2

CLASSES = sorted(FAMILIES)
_SPLIT_KEYS = {"train": 0, "test": 1}


def _rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(signal ** 2)))


def _background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS background: coloured noise of random slope, sometimes with mains hum."""
    noise = coloured_noise(rng, n, rng.uniform(0.0, 2.0))
    if rng.random() < 0.3:
        t = np.arange(n) / sr
        mains = 50.0 if rng.random() < 0.5 else 60.0
        hum = sum(rng.uniform(0.2, 1.0) / k
                  * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
                  for k in range(1, 5))
        noise = noise + rng.uniform(0.2, 0.8) * hum / _rms(hum)
    return noise / _rms(noise)


def synthesise_clip(seed: int, class_index: int, split: str, index: int,
                    sample_rate: int = SAMPLE_RATE,
                    clip_seconds: float = CLIP_SECONDS) -> np.ndarray:
    """One float32 clip of class `CLASSES[class_index]`, in [-1, 1], deterministic for its key."""
    rng = np.random.default_rng([seed, class_index, _SPLIT_KEYS[split], index])
    n = int(round(sample_rate * clip_seconds))
    sources = [lambda r, family=family: family(r, n, sample_rate) for family in
               (FAMILIES[name] for name in CLASSES)]
    return mix_scene(rng, sources, class_index, n, sample_rate)


def mix_scene(rng: np.random.Generator, sources: list, class_index: int, n: int,
              sample_rate: int) -> np.ndarray:
    """One float32 scene in [-1, 1]: `sources[class_index](rng)` (a length-n waveform) as the
    foreground, sometimes with a quieter other source, over coloured background noise at a random
    SNR, scaled to a random peak level."""
    foreground = sources[class_index](rng)
    foreground = foreground / max(_rms(foreground), 1e-9)
    if rng.random() < 0.25:
        other = int(rng.choice([i for i in range(len(sources)) if i != class_index]))
        interferer = sources[other](rng)
        foreground = foreground + interferer / max(_rms(interferer), 1e-9) * 10 ** (
            -rng.uniform(6, 15) / 20)
    snr_db = rng.uniform(0.0, 20.0)
    mix = foreground + _background(rng, n, sample_rate) * 10 ** (-snr_db / 20)
    peak_db = rng.uniform(-24.0, -1.0)
    return (mix / np.max(np.abs(mix)) * 10 ** (peak_db / 20)).astype(np.float32)


def _params(seed: int, clips_per_class: int, test_fraction: float) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed),
            "clips_per_class": int(clips_per_class), "test_fraction": float(test_fraction),
            "sample_rate": SAMPLE_RATE, "clip_seconds": CLIP_SECONDS, "classes": CLASSES}


def dataset_folder(workspace: str | Path, seed: int = 0, clips_per_class: int = CLIPS_PER_CLASS,
                   test_fraction: float = TEST_FRACTION) -> Path:
    """Where the dataset for these parameters lives: WORKSPACE/data/synthetic-<hash>."""
    blob = json.dumps(_params(seed, clips_per_class, test_fraction), sort_keys=True).encode()
    digest = hashlib.sha256(blob).hexdigest()[:12]
    return Path(workspace).absolute() / "data" / f"synthetic-{digest}"


def _write_dataset(folder: Path, seed: int, n_train: int, n_test: int, params: dict) -> None:
    rows = ["path,label,split"]
    for class_index, label in enumerate(CLASSES):
        (folder / "audio" / label).mkdir(parents=True)
        for split, count in (("train", n_train), ("test", n_test)):
            for index in range(count):
                relative = f"audio/{label}/{label}-{split}-{index:04d}.wav"
                clip = synthesise_clip(seed, class_index, split, index)
                # x * 2**15 is the inverse of how PCM_16 is read back (int / 2**15).
                pcm = np.clip(np.round(clip * 32768.0), -32768, 32767).astype(np.int16)
                sf.write(folder / relative, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
                rows.append(f"{relative},{label},{split}")
    (folder / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")


STALE_STAGING_SECONDS = 3600  # a staging folder untouched this long belongs to a killed generator


def remove_stale_staging(data_folder: Path, now: float | None = None) -> list[Path]:
    """Delete the hidden staging folders (`.synthetic-*`) a killed generator left in
    `data_folder`. Only folders untouched for STALE_STAGING_SECONDS go (the newest modification
    time of the folder and its subfolders: a generator still writing touches one with every
    file), so a concurrent generator keeps its own. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for staging in data_folder.glob(f".{NAME}-*"):
        try:
            stale = staging.is_dir() and now - _last_touched(staging) > STALE_STAGING_SECONDS
        except OSError:
            continue
        if stale:
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


def _last_touched(folder: Path) -> float:
    return max(os.stat(root).st_mtime for root, _, _ in os.walk(folder))


def generate_synthetic(workspace: str | Path, seed: int = 0,
                       clips_per_class: int = CLIPS_PER_CLASS,
                       test_fraction: float = TEST_FRACTION) -> Path:
    """Write (or reuse) the synthetic dataset under `workspace`; returns its folder.

    `clips_per_class` counts train and test together; `test_fraction` of them test.
    """
    if clips_per_class < 2:
        raise EdgeclError(f"--clips-per-class: expected at least 2, got {clips_per_class}")
    if not 0.0 < test_fraction < 1.0:
        raise EdgeclError(f"test fraction: expected a value in (0, 1), got {test_fraction}")
    n_test = min(max(1, int(round(clips_per_class * test_fraction))), clips_per_class - 1)
    folder = dataset_folder(workspace, seed, clips_per_class, test_fraction)
    if folder.parent.is_dir():
        remove_stale_staging(folder.parent)
    if (folder / "manifest.csv").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build under a temporary name in the same folder, then rename: the final folder appears
    # only when complete, and a concurrent generator that loses the race just discards its copy.
    staging = staging_folder(folder, suffix="")
    try:
        _write_dataset(staging, seed, clips_per_class - n_test, n_test,
                       _params(seed, clips_per_class, test_fraction))
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "manifest.csv").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_synthetic(workspace: str | Path, seed: int = 0, clips_per_class: int = CLIPS_PER_CLASS,
                   test_fraction: float = TEST_FRACTION) -> DatasetSplit:
    """Generate (or reuse) the synthetic set and load it through the manifest loader."""
    folder = generate_synthetic(workspace, seed, clips_per_class, test_fraction)
    return load_manifest(folder, sample_rate=SAMPLE_RATE, clip_seconds=CLIP_SECONDS, name=NAME)
