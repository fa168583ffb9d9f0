"""The clip records every loader yields, and the checks every loader shares."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgecl.errors import EdgeclError

SPLITS = ("train", "test")
MANIFEST_SPLITS = ("train", "val", "test")  # a manifest may fix the validation clips too


@dataclass(frozen=True)
class Clip:
    """One labelled audio file. `path` is absolute; `fold` is set for folded datasets (ESC-50)."""

    path: Path
    label: str
    split: str
    fold: int | None = None


@dataclass
class DatasetSplit:
    """A dataset divided into train and test clips, with the model's sample rate and clip length."""

    name: str
    train: list[Clip]
    test: list[Clip]
    classes: list[str]
    sample_rate: int
    clip_seconds: float
    source: str = field(default="", compare=False)  # where it came from, for messages
    # Validation clips fixed by the dataset (a manifest's `val` rows); empty: carved from train.
    val: list[Clip] = field(default_factory=list)

    @property
    def clip_samples(self) -> int:
        """Samples per clip at the model's rate."""
        return int(round(self.sample_rate * self.clip_seconds))

    def counts(self, split: str) -> dict[str, int]:
        """Clips per class in `split` ("train" or "test"), in class order."""
        clips = self.train if split == "train" else self.test
        counter = Counter(clip.label for clip in clips)
        return {name: counter.get(name, 0) for name in self.classes}


def build_split(name: str, train: list[Clip], test: list[Clip], sample_rate: int,
                clip_seconds: float, source: str, val: list[Clip] | None = None) -> DatasetSplit:
    """Assemble a DatasetSplit after the checks every dataset must pass.

    Every class must have training clips (a class seen only at test time cannot be learnt), and
    the sample rate and clip length must be positive.
    """
    if sample_rate <= 0:
        raise EdgeclError(f"{name}: sample rate must be a positive integer, got {sample_rate}")
    if not clip_seconds > 0:
        raise EdgeclError(f"{name}: clip length must be positive seconds, got {clip_seconds}")
    if not train:
        raise EdgeclError(f"{source}: no training clips")
    train_classes = {clip.label for clip in train}
    test_only = sorted({clip.label for clip in [*test, *(val or [])]} - train_classes)
    if test_only:
        raise EdgeclError(f"{source}: class {test_only[0]!r} has no training clips "
                          f"({len(test_only)} such class(es))")
    return DatasetSplit(name=name, train=train, test=test, classes=sorted(train_classes),
                        sample_rate=int(sample_rate), clip_seconds=float(clip_seconds),
                        source=source, val=list(val or []))


def require_files(clips: Iterable[Clip], source: str) -> None:
    """Fail up front, naming the first missing audio file and how many are missing."""
    missing = [clip.path for clip in clips if not clip.path.is_file()]
    if missing:
        raise EdgeclError(f"{source}: audio file {missing[0]} not found "
                          f"({len(missing)} missing file(s) in total)")


def path_inside(root: Path, relative: str, where: str) -> Path:
    """`root / relative`, normalised; an error naming `where` if it leaves `root`.

    The check is lexical (symlinks are not resolved), so a dataset may link its files elsewhere.
    Absolute paths are refused here (official layouts never use them); a manifest, whose absolute
    paths are its author's choice, uses `listed_path`.
    """
    normal = Path(os.path.normpath(root / relative))
    if Path(relative).is_absolute() or not normal.is_relative_to(root):
        raise EdgeclError(f"{where}: path {relative!r} leaves the dataset folder {root}")
    return normal


def listed_path(root: Path, listed: str, where: str) -> Path:
    """A path as a manifest lists it: absolute ones as given (normalised), relative ones inside
    `root` (path_inside)."""
    if Path(listed).is_absolute():
        return Path(os.path.normpath(listed))
    return path_inside(root, listed, where)


def read_table(path: Path, delimiter: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a delimited text file with a header that must contain `required` columns."""
    if not path.is_file():
        raise EdgeclError(f"{path}: metadata file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = [column.strip() for column in (reader.fieldnames or [])]
            missing = [column for column in required if column not in header]
            if missing:
                shown = "tab" if delimiter == "\t" else repr(delimiter)
                raise EdgeclError(f"{path}: header must have column(s) {', '.join(required)} "
                                  f"({shown}-separated); missing {', '.join(missing)}, "
                                  f"found {header or 'an empty file'}")
            reader.fieldnames = header
            rows = [{key: (value or "").strip() for key, value in row.items() if key is not None}
                    for row in reader]
    except UnicodeDecodeError:
        raise EdgeclError(f"{path}: expected a UTF-8 text file") from None
    except csv.Error as error:
        raise EdgeclError(f"{path}: malformed table ({error})") from None
    return rows
