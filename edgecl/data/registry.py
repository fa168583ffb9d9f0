"""Datasets by name: each entry owns its canonical name, the aliases it accepts (any case), its
loader and the task split of its published experiments. `load_dataset` is the one entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecl.data import esc50, manifest, synthetic, tau
from edgecl.data.records import DatasetSplit
from edgecl.errors import EdgeclError


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset: `load(root, options) -> DatasetSplit` gets load_dataset's keyword options."""

    name: str
    aliases: tuple[str, ...]
    load: Callable[[Path | None, dict], DatasetSplit]
    needs_root: bool = True
    #: (n_tasks, n_init_cls, n_cls_a_task) of the published experiments, when there are some.
    published_tasks: tuple[int, int, int] | None = None


def _synthetic(root, o) -> DatasetSplit:
    if o["workspace"] is None:
        raise EdgeclError("--workspace: the synthetic dataset is generated into a workspace; "
                          "give one")
    split = synthetic.load_synthetic(o["workspace"], seed=o["data_seed"],
                                     clips_per_class=o["clips_per_class"])
    if o["sample_rate"] is not None or o["clip_seconds"] is not None:
        split.sample_rate = int(o["sample_rate"] or split.sample_rate)
        split.clip_seconds = float(o["clip_seconds"] or split.clip_seconds)
    return split


_ENTRIES = (
    DatasetEntry("synthetic", (), _synthetic, needs_root=False),
    DatasetEntry("ESC-50", ("esc50",), lambda root, o: esc50.load_esc50(
        root, test_fold=o["test_fold"], sample_rate=o["sample_rate"] or esc50.SAMPLE_RATE,
        clip_seconds=o["clip_seconds"] or esc50.CLIP_SECONDS), published_tasks=(5, 10, 10)),
    DatasetEntry("TAU-ASC", ("tau", "tau-asc-2019"), lambda root, o: tau.load_tau(
        root, sample_rate=o["sample_rate"] or tau.SAMPLE_RATE,
        clip_seconds=o["clip_seconds"] or tau.CLIP_SECONDS), published_tasks=(5, 2, 2)),
    DatasetEntry("manifest", (), lambda root, o: manifest.load_manifest(
        root, seed=o["seed"], test_fraction=o["test_fraction"], sample_rate=o["sample_rate"],
        clip_seconds=o["clip_seconds"])),
)
_BY_NAME = {entry.name: entry for entry in _ENTRIES}
_ALIASES = {alias.lower(): entry.name for entry in _ENTRIES
            for alias in (entry.name, *entry.aliases)}
DATASET_NAMES = tuple(_BY_NAME)


def all_aliases() -> dict[str, str]:
    """Every accepted spelling (lower case) -> its canonical dataset name."""
    return dict(_ALIASES)


def canonical_name(name: str) -> str:
    """The canonical dataset name for `name` (case-insensitive; esc50 and tau are aliases)."""
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise EdgeclError(f"--dataset: expected one of {', '.join(DATASET_NAMES)}, "
                          f"got {name!r}") from None


def dataset_entry(name: str) -> DatasetEntry:
    """The registry entry of dataset `name` (any accepted spelling)."""
    return _BY_NAME[canonical_name(name)]


def load_dataset(name: str, root: str | Path | None = None, *, test_fold: int = 1, seed: int = 0,
                 workspace: str | Path | None = None, sample_rate: int | None = None,
                 clip_seconds: float | None = None, test_fraction: float = manifest.TEST_FRACTION,
                 data_seed: int = 0,
                 clips_per_class: int = synthetic.CLIPS_PER_CLASS) -> DatasetSplit:
    """Load dataset `name` (any accepted spelling) as a DatasetSplit.

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
    entry = dataset_entry(name)
    if entry.needs_root and root is None:
        raise EdgeclError(f"--data-root: dataset {entry.name} needs its data folder")
    return entry.load(root, dict(test_fold=test_fold, seed=seed, workspace=workspace,
                                 sample_rate=sample_rate, clip_seconds=clip_seconds,
                                 test_fraction=test_fraction, data_seed=data_seed,
                                 clips_per_class=clips_per_class))
