"""Shared by the export, bundle and runtime tests: a tiny BC-ResNet trained on synthetic tones.

Each class is a tone at its own pitch with random level, slight detuning and noise. A few epochs
on cached log-mels with BatchNorm statistics recomputed afterwards (as the trainer does) give
100% accuracy with a top-2 logit margin of several units on every held-out clip, far beyond what
int8 rounding moves on any CPU: tests of the export mechanics must not hinge on one borderline
clip, whose verdict could depend on the CPU's int8 instruction set. Results are cached for the test session (this
module is imported once), so the test modules share one training run and one exported bundle.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

SAMPLE_RATE = 8000
CLIP_SAMPLES = 4000
CLASSES = ["low", "mid", "high", "top"]
WIDTH = 8


def tones(n_clips: int, seed: int, spread: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """(waveforms [n, CLIP_SAMPLES] float32, targets [n]) with classes in turn; each pitch off
    its class's by a relative `spread` (standard deviation)."""
    rng = np.random.default_rng(seed)
    targets = np.arange(n_clips) % len(CLASSES)
    time = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    pitch = 300.0 * (1 + targets)[:, None] * (1 + spread * rng.standard_normal((n_clips, 1)))
    level = 10 ** rng.uniform(-1.5, -0.2, (n_clips, 1))
    noise = 0.01 * rng.standard_normal((n_clips, CLIP_SAMPLES))
    waves = level * np.sin(2 * np.pi * pitch * time) + noise
    return waves.astype(np.float32), targets


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Torch on one thread in the module that imports this fixture (2 shared CI cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.lru_cache(maxsize=1)
def trained_model(epochs: int = 12):
    """A small BC-ResNet (real models package) trained on tones; eval mode."""
    import models

    torch.manual_seed(0)
    model = models.build_model("bc-resnet", len(CLASSES),
                               models.FrontEndConfig.for_sample_rate(SAMPLE_RATE), width=WIDTH)
    waves, targets = tones(96, seed=1)
    with torch.no_grad():
        features = model.frontend(torch.from_numpy(waves))
    labels = torch.from_numpy(targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(waves), generator=generator).split(16):
            loss = torch.nn.functional.cross_entropy(model.forward_features(features[batch])[0],
                                                     labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    from edgecl.training.loop import PhaseData, recalibrate_batchnorm

    recalibrate_batchnorm(model, PhaseData(lambda index: features[list(index)], labels))
    return model.eval()


@dataclass(frozen=True)
class ExportedBundle:
    folder: Path
    manifest: dict
    holdout: np.ndarray
    holdout_targets: np.ndarray


def exported_bundle() -> ExportedBundle:
    """The trained model exported once with firmware_export.export_phase into a temp folder."""
    return _exported("onnx")


# The TFLM export is windowed: 0.25 s windows, two per 0.5 s clip, pooled (the whole-clip build is
# the one-window case of the same code).
TFLM_WINDOW_SECONDS = 0.25


def exported_tflm_bundle() -> ExportedBundle:
    """The trained model exported once with --target tflm and TFLM_WINDOW_SECONDS (needs the
    tflm extra)."""
    return _exported("tflm")


@functools.cache
def _exported(target: str) -> ExportedBundle:
    """export_phase of the trained model for `target`, once per target, into a temp folder."""
    from firmware_export import export_phase

    root = Path(tempfile.mkdtemp(prefix=f"edgecl-test-{target}-bundle-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    calibration, _ = tones(48, seed=2)
    holdout, targets = tones(64, seed=3)
    manifest = export_phase(trained_model(), root / "phase_0", phase=0, classes=CLASSES,
                            calibration_waveforms=calibration, holdout_waveforms=holdout,
                            holdout_targets=targets, target=target,
                            **({"tflm_window_seconds": TFLM_WINDOW_SECONDS}
                               if target == "tflm" else {}))
    return ExportedBundle(root / "phase_0", manifest, holdout, targets)
