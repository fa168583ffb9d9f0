"""Datasets as lists of clip records: ESC-50, TAU-ASC, a CSV manifest, and the synthetic default.

`load_dataset(name, root, ...)` is the entry point; every loader returns a `DatasetSplit` of
`Clip` records and checks its files up front. No audio is decoded here (see edgecl.audio).
"""

from edgecl.data.records import Clip, DatasetSplit
from edgecl.data.registry import (
                                  DATASET_NAMES,
                                  all_aliases,
                                  canonical_name,
                                  dataset_entry,
                                  load_dataset,
)

__all__ = ["DATASET_NAMES", "Clip", "DatasetSplit", "all_aliases", "canonical_name", "dataset_entry",
           "load_dataset"]
