"""A synthetic stand-in for ESC-50, in ESC-50's official layout, for benchmarks at the published
scale (ESC-50 itself is not redistributable here and the project downloads nothing).

Full size by default: 50 classes x 40 clips (8 per fold, 5 folds), 5 s at 44.1 kHz, 16-bit mono,
as ROOT/audio/<fold>-<source>-A-<target>.wav and ROOT/meta/esc50.csv, so `--dataset ESC-50
--data-root ROOT` reads it with the same loader as the real set. The 50 classes are the ten sound
families of the synthetic set (edgecl.data.sounds) each played at five speeds (x0.6 to x1.6):
a family synthesised for a lower sample rate and written at the real one has every frequency and
tempo scaled, which makes related but separable classes, like ESC-50's dog / rooster / cow.
Deterministic for a seed; built in a hidden folder and renamed into place, so ROOT exists only
when complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from edgecl.data.esc50 import COLUMNS
from edgecl.data.sounds import FAMILIES
from edgecl.data.synthetic import mix_scene
from edgecl.errors import EdgeclError
from edgecl.fileio import staging_folder

SPEEDS = (0.6, 0.8, 1.0, 1.25, 1.6)
FOLDS = 5
MAX_CLASSES = len(FAMILIES) * len(SPEEDS)


def _family_speeds(n_classes: int) -> list[tuple[str, float]]:
    """The (family, speed) of each of the first `n_classes` classes, speeds varying fastest."""
    return [(family, speed) for family in sorted(FAMILIES) for speed in SPEEDS][:n_classes]


def class_names(n_classes: int = MAX_CLASSES) -> list[str]:
    """`family-xSPEED` of each class."""
    return [f"{family}-x{speed:g}" for family, speed in _family_speeds(n_classes)]


def _sources(n: int, sample_rate: int, n_classes: int) -> list:
    """One source per class: the family synthesised at sample_rate / speed, written at
    sample_rate (frequencies and tempo times `speed`)."""
    return [lambda rng, family=FAMILIES[family], speed=speed:
            family(rng, n, max(1, int(round(sample_rate / speed))))
            for family, speed in _family_speeds(n_classes)]


def generate_esc50_layout(root: str | Path, n_classes: int = MAX_CLASSES, clips_per_fold: int = 8,
                          sample_rate: int = 44100, clip_seconds: float = 5.0, seed: int = 0,
                          progress=None) -> Path:
    """Write the set to `root` (which must not exist); returns its absolute path. `progress`, if
    given, is called once per clip written."""
    root = Path(root).absolute()
    if not 2 <= n_classes <= MAX_CLASSES:
        raise EdgeclError(f"--classes: expected 2 to {MAX_CLASSES}, got {n_classes}")
    if clips_per_fold < 1:
        raise EdgeclError(f"--clips-per-fold: expected at least 1, got {clips_per_fold}")
    if root.exists():
        raise EdgeclError(f"{root}: already exists; give a new folder (the generator never "
                          f"writes into an existing one)")
    n = int(round(sample_rate * clip_seconds))
    if n < 1:
        raise EdgeclError(f"--clip-seconds: {clip_seconds} s at {sample_rate} Hz is no samples")
    sources = _sources(n, sample_rate, n_classes)
    staging = staging_folder(root, suffix="")
    try:
        (staging / "audio").mkdir()
        (staging / "meta").mkdir()
        rows = [",".join(COLUMNS)]
        for target, category in enumerate(class_names(n_classes)):
            for fold in range(1, FOLDS + 1):
                for index in range(clips_per_fold):
                    source = f"{(target * FOLDS + fold - 1) * clips_per_fold + index:06d}"
                    filename = f"{fold}-{source}-A-{target}.wav"
                    rng = np.random.default_rng([seed, target, fold, index])
                    clip = mix_scene(rng, sources, target, n, sample_rate)
                    pcm = np.clip(np.round(clip * 32768.0), -32768, 32767).astype(np.int16)
                    sf.write(staging / "audio" / filename, pcm, sample_rate, subtype="PCM_16",
                             format="WAV")
                    rows.append(f"{filename},{fold},{target},{category},False,{source},A")
                    if progress is not None:
                        progress()
        (staging / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
        os.rename(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root
