"""TAU Urban Acoustic Scenes 2019 development set (DCASE 2019 Task 1a) in its official layout.

ROOT/meta.csv (tab-separated: filename, scene_label, identifier, source_label) lists every clip;
ROOT/evaluation_setup/fold1_train.csv trains and fold1_evaluate.csv tests (tab-separated:
filename, scene_label). Filenames such as `audio/airport-lisbon-1000-40000-a.wav` are relative
to ROOT. The audio is 48 kHz, 24-bit, stereo, 10 s.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgecl.data.records import (
    Clip,
    DatasetSplit,
    build_split,
    path_inside,
    read_table,
    require_files,
)
from edgecl.errors import EdgeclError

NAME = "TAU-ASC"
SAMPLE_RATE = 48000
CLIP_SECONDS = 10.0
META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
FOLD_COLUMNS = ("filename", "scene_label")
FOLD_FILES = {"train": "fold1_train.csv", "test": "fold1_evaluate.csv"}


def load_tau(root: str | Path, sample_rate: int = SAMPLE_RATE,
             clip_seconds: float = CLIP_SECONDS) -> DatasetSplit:
    """Clips of TAU-ASC 2019 dev at `root`: fold1_train trains, fold1_evaluate tests."""
    root = Path(os.path.normpath(Path(root).absolute()))
    if not root.is_dir():
        raise EdgeclError(f"--data-root {root}: TAU-ASC folder not found")
    meta_path = root / "meta.csv"
    meta_labels = {row["filename"]: row["scene_label"]
                   for row in read_table(meta_path, "\t", META_COLUMNS)}

    seen: dict[str, str] = {}
    splits: dict[str, list[Clip]] = {}
    for split, name in FOLD_FILES.items():
        table = root / "evaluation_setup" / name
        clips = []
        for line, row in enumerate(read_table(table, "\t", FOLD_COLUMNS), start=2):
            filename, label = row["filename"], row["scene_label"]
            if not filename or not label:
                raise EdgeclError(f"{table}: line {line}: empty filename or scene_label")
            if filename not in meta_labels:
                raise EdgeclError(f"{table}: line {line}: {filename} is not listed in {meta_path}")
            if meta_labels[filename] != label:
                raise EdgeclError(f"{table}: line {line}: {filename} is labelled {label!r} but "
                                  f"{meta_path} says {meta_labels[filename]!r}")
            if filename in seen:
                raise EdgeclError(f"{table}: line {line}: {filename} is listed twice "
                                  f"(already in {seen[filename]})")
            seen[filename] = name
            path = path_inside(root, filename, f"{table}: line {line}")
            clips.append(Clip(path=path, label=label, split=split))
        if not clips:
            raise EdgeclError(f"{table}: no clips listed")
        splits[split] = clips

    require_files(splits["train"] + splits["test"], str(root))
    return build_split(NAME, splits["train"], splits["test"], sample_rate, clip_seconds,
                       source=str(root))
