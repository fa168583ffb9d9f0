"""ESC-50 in its official layout: ROOT/meta/esc50.csv and ROOT/audio/<filename>.

The CSV header is `filename,fold,target,category,esc10,src_file,take`; the class is `category`.
One fold tests, the other folds train (the published protocol averages over the five test folds).
"""

from __future__ import annotations

from pathlib import Path

from edgecl.data.records import Clip, DatasetSplit, build_split, read_table, require_files
from edgecl.errors import EdgeclError

NAME = "ESC-50"
SAMPLE_RATE = 44100
CLIP_SECONDS = 5.0
COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def load_esc50(root: str | Path, test_fold: int = 1, sample_rate: int = SAMPLE_RATE,
               clip_seconds: float = CLIP_SECONDS) -> DatasetSplit:
    """Clips of ESC-50 at `root`; fold `test_fold` is the test split, the rest train."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise EdgeclError(f"--data-root {root}: ESC-50 folder not found")
    meta = root / "meta" / "esc50.csv"
    rows = read_table(meta, ",", COLUMNS)
    if not rows:
        raise EdgeclError(f"{meta}: no clips listed")

    clips: list[Clip] = []
    for line, row in enumerate(rows, start=2):
        if not row["filename"] or not row["category"]:
            raise EdgeclError(f"{meta}: line {line}: empty filename or category")
        try:
            fold = int(row["fold"])
        except ValueError:
            raise EdgeclError(f"{meta}: line {line}: fold must be an integer, "
                              f"got {row['fold']!r}") from None
        if Path(row["filename"]).name != row["filename"]:
            raise EdgeclError(f"{meta}: line {line}: filename must be a bare file name under "
                              f"audio/, got {row['filename']!r}")
        split = "test" if fold == test_fold else "train"
        clips.append(Clip(path=root / "audio" / row["filename"], label=row["category"],
                          split=split, fold=fold))

    folds = sorted({clip.fold for clip in clips})
    if test_fold not in folds:
        raise EdgeclError(f"--test-fold: expected one of {', '.join(map(str, folds))} "
                          f"(folds in {meta}), got {test_fold}")
    require_files(clips, str(meta))
    train = [clip for clip in clips if clip.split == "train"]
    test = [clip for clip in clips if clip.split == "test"]
    return build_split(NAME, train, test, sample_rate, clip_seconds, source=str(meta))
