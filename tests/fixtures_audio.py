"""Helpers that write small datasets in the official layouts, for tests across the project.

Every writer is quick (short clips, few files) and deterministic for its arguments. Import them
in a test as `from fixtures_audio import write_esc50, ...` (tests/ is on pytest's pythonpath).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take"
TAU_META_HEADER = "filename\tscene_label\tidentifier\tsource_label"
TAU_FOLD_HEADER = "filename\tscene_label"


def fixture_signal(n_samples: int, seed: int, channels: int = 1, peak: float = 0.5) -> np.ndarray:
    """A reproducible noisy tone, `[samples]` or `[samples, channels]` (soundfile's layout)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 1000.0
    base = np.sin(2 * np.pi * (3 + seed % 7) * t) * 0.6 + rng.uniform(-0.4, 0.4, n_samples)
    signal = np.stack([base * (1.0 - 0.3 * c) for c in range(channels)], axis=1) * peak
    return signal[:, 0].astype(np.float32) if channels == 1 else signal.astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int,
              subtype: str = "PCM_16") -> Path:
    """Write `samples` ([samples] or [samples, channels]) with soundfile; creates folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sample_rate, subtype=subtype)
    return path


def write_esc50(root: str | Path, categories: Sequence[str] = ("dog", "rain", "siren"),
                clips_per_fold: int = 1, folds: Sequence[int] = (1, 2, 3, 4, 5),
                seconds: float = 0.1, sample_rate: int = 44100) -> Path:
    """ESC-50 layout: ROOT/meta/esc50.csv and ROOT/audio/<fold>-<src>-<take>-<target>.wav.

    Writes `clips_per_fold` clips per category per fold (44.1 kHz mono 16-bit by default).
    """
    root = Path(root)
    lines = [ESC50_HEADER]
    n = int(seconds * sample_rate)
    for target, category in enumerate(categories):
        for fold in folds:
            for index in range(clips_per_fold):
                source = f"{100 * target + 10 * fold + index:06d}"
                filename = f"{fold}-{source}-A-{target}.wav"
                write_wav(root / "audio" / filename,
                          fixture_signal(n, seed=target * 1000 + fold * 10 + index), sample_rate)
                esc10 = "True" if category in ("dog", "rain") else "False"
                lines.append(f"{filename},{fold},{target},{category},{esc10},{source},A")
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def tau_filename(scene: str, index: int) -> str:
    """An official-looking TAU 2019 filename, relative to ROOT."""
    city = ("lisbon", "paris", "vienna")[index % 3]
    return f"audio/{scene}-{city}-{1000 + index}-{40000 + 10 * index}-a.wav"


def write_tau(root: str | Path, scenes: Sequence[str] = ("airport", "metro", "park"),
              train_per_scene: int = 2, test_per_scene: int = 1, seconds: float = 0.5,
              sample_rate: int = 48000) -> Path:
    """TAU-ASC 2019 dev layout, 24-bit stereo WAVs: meta.csv, evaluation_setup/fold1_*.csv."""
    root = Path(root)
    meta, train, evaluate = [TAU_META_HEADER], [TAU_FOLD_HEADER], [TAU_FOLD_HEADER]
    n = int(seconds * sample_rate)
    for s, scene in enumerate(scenes):
        for index in range(train_per_scene + test_per_scene):
            filename = tau_filename(scene, index)
            write_wav(root / filename, fixture_signal(n, seed=s * 100 + index, channels=2),
                      sample_rate, subtype="PCM_24")
            city_location = "-".join(Path(filename).stem.split("-")[1:3])
            meta.append(f"{filename}\t{scene}\t{city_location}\ta")
            (train if index < train_per_scene else evaluate).append(f"{filename}\t{scene}")
    (root / "evaluation_setup").mkdir(parents=True, exist_ok=True)
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    (root / "evaluation_setup" / "fold1_train.csv").write_text("\n".join(train) + "\n")
    (root / "evaluation_setup" / "fold1_evaluate.csv").write_text("\n".join(evaluate) + "\n")
    return root


def write_manifest_dataset(root: str | Path, labels: Sequence[str] = ("a", "b", "c"),
                           clips_per_class: int = 5, test_per_class: int | None = 1,
                           seconds: float = 0.25, sample_rate: int = 8000,
                           subtype: str = "PCM_16") -> Path:
    """ROOT/manifest.csv (path,label[,split]) and ROOT/clips/<label>/<n>.wav; returns the CSV.

    `test_per_class=None` writes no split column (the loader then draws one by seed).
    """
    root = Path(root)
    lines = ["path,label" + ("" if test_per_class is None else ",split")]
    n = int(seconds * sample_rate)
    for c, label in enumerate(labels):
        for index in range(clips_per_class):
            relative = f"clips/{label}/{index}.wav"
            signal = fixture_signal(n, seed=c * 100 + index)
            write_wav(root / relative, signal, sample_rate, subtype)
            if test_per_class is None:
                lines.append(f"{relative},{label}")
            else:
                split = "test" if index < test_per_class else "train"
                lines.append(f"{relative},{label},{split}")
    csv_path = root / "manifest.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


def tiny_synthetic(workspace: str | Path, clips_per_class: int = 5, seed: int = 0):
    """The real synthetic dataset (10 classes, 16 kHz, 1 s), small: ~0.1 s per clip to generate.

    Returns its DatasetSplit; with 5 clips per class, 4 train and 1 test per class.
    """
    from edgecl.data.synthetic import load_synthetic

    return load_synthetic(workspace, seed=seed, clips_per_class=clips_per_class)
