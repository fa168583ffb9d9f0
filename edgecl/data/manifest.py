"""A user's own data as a CSV manifest: header `path,label` and an optional `split` column.

Relative paths are relative to the CSV's folder and may not leave it; absolute paths are taken as
given. With a `split` column every row says `train`, `val` or `test` (`val` rows, when any, are the
validation clips of their class's task instead of a share carved from train); without one a
stratified test split is drawn by seed. Extra columns are ignored.
Each audio file may be listed once (no duplicate rows, no clip with two labels or in both splits).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgecl.audio import audio_info
from edgecl.data.records import (
    MANIFEST_SPLITS,
    Clip,
    DatasetSplit,
    build_split,
    listed_path,
    read_table,
    require_files,
)
from edgecl.data.validate import check_unique_clips
from edgecl.errors import EdgeclError

NAME = "manifest"
MANIFEST_NAME = "manifest.csv"
CLIP_SECONDS = 1.0
TEST_FRACTION = 0.2


def resolve_manifest(root: str | Path) -> Path:
    """The manifest CSV: `root` itself when it is a file, else `root/manifest.csv`."""
    path = Path(root).absolute()
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise EdgeclError(f"--data-root {path}: manifest CSV not found")
    return Path(os.path.normpath(path))


def stratified_test_split(labels: list[str], test_fraction: float, seed: int) -> list[str]:
    """A split name per item: about `test_fraction` of each class goes to test, at least one
    item of every class stays in train. The draw depends only on `seed` and the labels."""
    if not 0.0 <= test_fraction < 1.0:
        raise EdgeclError(f"test fraction: expected a value in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    splits = ["train"] * len(labels)
    for label in sorted(by_class):
        members = by_class[label]
        n_test = min(int(round(len(members) * test_fraction)), len(members) - 1)
        for position in rng.permutation(len(members))[:n_test]:
            splits[members[position]] = "test"
    return splits


def load_manifest(root: str | Path, seed: int = 0, test_fraction: float = TEST_FRACTION,
                  sample_rate: int | None = None, clip_seconds: float | None = None,
                  name: str = NAME) -> DatasetSplit:
    """Clips listed in a manifest CSV (`root` is the CSV or its folder).

    `sample_rate=None` takes the native rate of the first listed file (header only);
    `clip_seconds=None` means 1 s.
    """
    csv_path = resolve_manifest(root)
    base = csv_path.parent
    rows = read_table(csv_path, ",", ("path", "label"))
    if not rows:
        raise EdgeclError(f"{csv_path}: no clips listed")
    has_split = "split" in rows[0]

    paths, labels, given_splits = [], [], []
    for line, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            raise EdgeclError(f"{csv_path}: line {line}: empty path or label")
        if has_split and row["split"] not in MANIFEST_SPLITS:
            raise EdgeclError(f"{csv_path}: line {line}: split must be 'train', 'val' or 'test', "
                              f"got {row['split']!r}")
        paths.append(listed_path(base, row["path"], f"{csv_path}: line {line}"))
        labels.append(row["label"])
        given_splits.append(row["split"] if has_split else None)

    splits = given_splits if has_split else stratified_test_split(labels, test_fraction, seed)
    clips = [Clip(path=path, label=label, split=split)
             for path, label, split in zip(paths, labels, splits, strict=True)]
    check_unique_clips(((f"line {line}", clip) for line, clip in enumerate(clips, start=2)),
                       str(csv_path))
    require_files(clips, str(csv_path))
    if sample_rate is None:
        sample_rate = audio_info(clips[0].path).sample_rate
    train = [clip for clip in clips if clip.split == "train"]
    test = [clip for clip in clips if clip.split == "test"]
    val = [clip for clip in clips if clip.split == "val"]
    return build_split(name, train, test, sample_rate,
                       CLIP_SECONDS if clip_seconds is None else clip_seconds,
                       source=str(csv_path), val=val)
