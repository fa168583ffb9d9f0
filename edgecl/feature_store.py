"""The feature store: each audio file's log-mel features on disk, shared by every run of a workspace
(WORKSPACE/features/), so a second run over the same data computes none.

An entry's key is a sha256 over the file's identity (resolved path, size, modification time in
ns: an edited file gets a new key) and everything its features depend on (the front-end config,
the model's sample rate and clip length, FORMAT_VERSION). An entry is one float32 .npy file,
WORKSPACE/features/<key[:2]>/<key>.npy, written to a temporary file in the same folder and
renamed over the target (os.replace is atomic), so several grid workers may read and write at
once: a reader sees a whole file or none, and two writers of one key write the same bytes. Entries
are read memory-mapped (copy-on-write), so features stay in the page cache instead of the
process's own memory. An entry is never trusted: one that is unreadable, not float32, not of the
shape the reader expects, or holding NaN or infinities counts as missing (`rejected`) and is
computed and written again.

Plain .npy files (numpy only) rather than a database or HDF5/zarr: entries are written once and
never updated, concurrent writers need no coordination beyond the atomic rename, and stale entries
are files anyone can delete.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

STORE_FOLDER = "features"
# 2: features computed one clip at a time (edgecl.features); version-1 entries depended on the
# batch that computed them, so they are not reused.
FORMAT_VERSION = 2


class FeatureStore:
    """Log-mel features of audio files under `root`, for one front end and clip setting."""

    def __init__(self, root: str | Path, *, frontend: dict[str, Any], sample_rate: int,
                 clip_samples: int) -> None:
        self.root = Path(root)
        self.clip_samples = int(clip_samples)
        self.rejected = 0  # entries found damaged and recomputed
        self._settings = json.dumps({"frontend": frontend, "sample_rate": int(sample_rate),
                                     "clip_samples": int(clip_samples),
                                     "version": FORMAT_VERSION}, sort_keys=True, default=str)

    def path_for(self, audio_path: str | Path) -> Path | None:
        """Where `audio_path`'s features live (None when the file cannot be stat'ed)."""
        try:
            resolved = Path(audio_path).resolve()
            info = resolved.stat()
        except OSError:
            return None
        identity = json.dumps([str(resolved), info.st_size, info.st_mtime_ns, self._settings])
        key = hashlib.sha256(identity.encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    def load(self, audio_path: str | Path, shape: tuple[int, ...] | None = None
             ) -> np.ndarray | None:
        """The stored features (memory-mapped, copy-on-write), or None when there are none or
        the entry is damaged (see the module's docstring); `shape`: the shape they must have."""
        path = self.path_for(audio_path)
        if path is None or not path.exists():
            return None
        try:
            features = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError):  # not a whole .npy file
            features = None
        if features is None or not _sound(features, shape):
            self.rejected += 1
            return None
        return features

    def save(self, audio_path: str | Path, features: np.ndarray) -> None:
        """Store `features` (float32) atomically; a failure to write only costs the saving."""
        path = self.path_for(audio_path)
        if path is None:
            return
        tmp_name = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".tmp",
                                            dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.ascontiguousarray(features, dtype=np.float32))
            os.replace(tmp_name, path)
        except OSError:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)


def _sound(features: np.ndarray, shape: tuple[int, ...] | None) -> bool:
    """Whether a stored entry can be used: float32 of the expected shape, every value finite."""
    return (features.dtype == np.float32 and (shape is None or features.shape == tuple(shape))
            and bool(np.isfinite(features).all()))
