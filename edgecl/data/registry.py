"""`load_dataset`: one entry point that maps a dataset name to its loader."""

from __future__ import annotations

from pathlib import Path

from edgecl.data import esc50, manifest, synthetic, tau
from edgecl.data.records import DatasetSplit
from edgecl.errors import EdgeclError

DATASET_NAMES = ("synthetic", "ESC-50", "TAU-ASC", "manifest")
_ALIASES = {"synthetic": "synthetic", "esc-50": "ESC-50", "esc50": "ESC-50", "tau-asc": "TAU-ASC",
            "tau": "TAU-ASC", "tau-asc-2019": "TAU-ASC", "manifest": "manifest"}


def canonical_name(name: str) -> str:
    """The canonical dataset name for `name` (case-insensitive; esc50 and tau are aliases)."""
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise EdgeclError(f"--dataset: expected one of {', '.join(DATASET_NAMES)}, "
                          f"got {name!r}") from None


def load_dataset(name: str, root: str | Path | None = None, *, test_fold: int = 1, seed: int = 0,
                 workspace: str | Path | None = None, sample_rate: int | None = None,
                 clip_seconds: float | None = None, test_fraction: float = manifest.TEST_FRACTION,
                 data_seed: int = 0,
                 clips_per_class: int = synthetic.CLIPS_PER_CLASS) -> DatasetSplit:
    """Load dataset `name` as a DatasetSplit.

    - `root`: the data folder (ESC-50, TAU-ASC) or the manifest CSV or its folder (manifest);
      ignored for synthetic.
    - `test_fold`: ESC-50's test fold. `seed`: the manifest's stratified test split when the
      CSV has no split column.
    - `workspace`, `data_seed`, `clips_per_class`: where and how the synthetic set is generated.
      `data_seed` is separate from `seed` so that runs with different seeds share one dataset.
    - `sample_rate`, `clip_seconds`: override the model's rate and clip length (defaults: ESC-50
      44.1 kHz 5 s, TAU-ASC 48 kHz 10 s, manifest the first file's rate and 1 s, synthetic
      16 kHz 1 s). The synthetic set is always generated at 16 kHz, 1 s.
    """
    canonical = canonical_name(name)
    if canonical == "synthetic":
        if workspace is None:
            raise EdgeclError("--workspace: the synthetic dataset is generated into a workspace; "
                              "give one")
        split = synthetic.load_synthetic(workspace, seed=data_seed, clips_per_class=clips_per_class)
        if sample_rate is not None or clip_seconds is not None:
            split.sample_rate = int(sample_rate or split.sample_rate)
            split.clip_seconds = float(clip_seconds or split.clip_seconds)
        return split
    if root is None:
        raise EdgeclError(f"--data-root: dataset {canonical} needs its data folder")
    if canonical == "ESC-50":
        return esc50.load_esc50(root, test_fold=test_fold,
                                sample_rate=sample_rate or esc50.SAMPLE_RATE,
                                clip_seconds=clip_seconds or esc50.CLIP_SECONDS)
    if canonical == "TAU-ASC":
        return tau.load_tau(root, sample_rate=sample_rate or tau.SAMPLE_RATE,
                            clip_seconds=clip_seconds or tau.CLIP_SECONDS)
    return manifest.load_manifest(root, seed=seed, test_fraction=test_fraction,
                                  sample_rate=sample_rate, clip_seconds=clip_seconds)
