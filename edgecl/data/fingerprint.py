"""The fingerprint of a dataset on disk, which binds a run to the data it started on.

A fingerprint lists every clip a run reads, in the loader's order, as (key, label, split, size in
bytes, modification time in ns): one stat per clip, no audio read, so it costs milliseconds even
for thousands of clips. A clip's key is its path relative to the data folder (the data root, or
the folder of a manifest CSV given as the root), so a dataset moved whole keeps its fingerprint;
a clip outside that folder (an absolute path in a manifest) is keyed by its absolute path.
Labels and splits are in it because a manifest edit that relabels a clip changes the run; the
order is in the digest because the task split draws from the clips in order.

A copy keeps the fingerprint only if it keeps the files' modification times (`mv`, `cp -a`,
`rsync -a`); content hashes would survive a plain copy but cost a full read of the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError

# (key, label, split, size, mtime_ns)
Entry = tuple[str, str, str, int, int]


def absolute_data_root(root: str | os.PathLike | None) -> str | None:
    """`root` as an absolute path: a relative one joined to the current folder as
    `Path.absolute()` does (as `edgecl grid` always has), an absolute one exactly as given, so
    that the runs and grid trials named from it before keep their names. Not normalised: `..`
    after a symbolic link is not the folder above the link's name."""
    if root is None:
        return None
    text = os.fspath(root)
    return text if not text or os.path.isabs(text) else str(Path(text).absolute())


def data_folder(root: str | os.PathLike) -> Path:
    """The folder clip keys are relative to: the root itself, or a root file's folder (a
    manifest CSV)."""
    path = Path(os.path.abspath(os.fspath(root)))
    return path if path.is_dir() else path.parent


@dataclass(frozen=True)
class DataFingerprint:
    """The clips of a dataset, in order, as entries (key, label, split, size, mtime_ns)."""

    entries: tuple[Entry, ...]

    @classmethod
    def of_split(cls, root: str | os.PathLike, split) -> DataFingerprint:
        """The fingerprint of a DatasetSplit loaded from `root` (every train, val, test clip)."""
        folder = data_folder(root)
        entries = []
        for clip in (*split.train, *split.val, *split.test):
            path = Path(os.path.normpath(clip.path))
            try:
                stat = path.stat()
            except OSError as error:
                raise EdgeclError(f"{path}: cannot read the clip's size and time "
                                  f"({error.strerror})") from None
            try:
                key = path.relative_to(folder).as_posix()
            except ValueError:
                key = str(path)
            entries.append((key, str(clip.label), str(clip.split), int(stat.st_size),
                            int(stat.st_mtime_ns)))
        return cls(tuple(entries))

    @property
    def digest(self) -> str:
        """sha256 of the ordered entries."""
        return hashlib.sha256(json.dumps(self.entries).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"clips": len(self.entries), "digest": self.digest,
                "entries": [list(entry) for entry in self.entries]}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> DataFingerprint:
        """Inverse of to_dict; a record of the wrong shape is a one-line error naming `source`."""
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(_is_entry(e) for e in entries):
            raise EdgeclError(f"{source}: the data fingerprint is not a list of [path, label, "
                              f"split, size, mtime_ns] entries; pass --overwrite to start the "
                              f"run again")
        return cls(tuple((e[0], e[1], e[2], int(e[3]), int(e[4])) for e in entries))

    def changes_since(self, recorded: DataFingerprint) -> str | None:
        """What differs from `recorded` in a few words ("2 clips added (a/x.wav, ...), 1 changed
        (b/y.wav: size)"), or None when nothing does."""
        if self.entries == recorded.entries:
            return None
        then = {e[0]: e for e in recorded.entries}
        now = {e[0]: e for e in self.entries}
        added = [key for key in now if key not in then]
        removed = [key for key in then if key not in now]
        changed = [key for key in now if key in then and now[key] != then[key]]
        parts = []
        for count, what, keys in ((len(added), "added", added), (len(removed), "removed", removed),
                                  (len(changed), "changed", changed)):
            if count:
                first = keys[0] + (f": {_what_changed(then[keys[0]], now[keys[0]])}"
                                   if what == "changed" else "")
                parts.append(f"{count} clip{'s' if count > 1 else ''} {what} "
                             f"({first}{', ...' if count > 1 else ''})")
        if not parts:
            return "the same clips listed in another order"
        if not added and not removed and all(now[k][:4] == then[k][:4] for k in changed):
            parts.append("only in modification time (a copy made with cp -a or rsync -a keeps "
                         "the times)")
        return ", ".join(parts)


def _is_entry(entry: Any) -> bool:
    return (isinstance(entry, list) and len(entry) == 5
            and all(isinstance(v, str) for v in entry[:3])
            and all(isinstance(v, int) and not isinstance(v, bool) for v in entry[3:]))


def _what_changed(then: Entry, now: Entry) -> str:
    names = (f"label {then[1]!r} -> {now[1]!r}", f"split {then[2]} -> {now[2]}", "size",
             "modification time")
    return ", ".join(name for name, a, b in zip(names, then[1:], now[1:], strict=True) if a != b)
