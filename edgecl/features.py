"""Log-mel feature cache: the front end is fixed (no trainable parameters), so each clip's log-mel
is computed once and reused by every epoch, validation pass and memory update.

What the cache computes from is a `FeatureItem`: the clip's key, where its array comes from
(`source`) and how to load it. The same clip has distinct entries per source: "clip" (read from
disk), "coded" (a new clip passed through the memory's lossy format) and "memory" (a replay
exemplar, whose features come from the *decoded* exemplar: lossy formats change them). With the
cache disabled (`enabled=False`, for measuring what it saves) every request recomputes the
features from the audio.

With a `store` (edgecl.feature_store.FeatureStore), the features of "clip" items (whose key is the
audio file's path) are read from disk when stored, and stored when computed: a later run over the
same files computes none of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from edgecl.device import device_of

Loader = Callable[[], np.ndarray]
SOURCES = ("clip", "coded", "memory")


@dataclass(frozen=True)
class FeatureItem:
    """One array the front end may turn into log-mels.

    `domain` "waveform": `load()` returns a waveform [T] and the front end runs on it; "logmel":
    `load()` already returns the features [1, F, T'].
    """

    key: str
    source: str
    load: Loader | None = field(compare=False, repr=False)
    domain: str = "waveform"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"feature item source must be one of {SOURCES}, got {self.source!r}")

    @property
    def cache_key(self) -> tuple[str, str]:
        return (self.source, self.key)


class FeatureCache:
    """Maps FeatureItems to log-mel tensors [1, F, T'] computed by `frontend`."""

    def __init__(self, frontend: torch.nn.Module, enabled: bool = True, batch_size: int = 64,
                 store=None) -> None:
        self.frontend = frontend
        self.enabled = enabled
        self.batch_size = batch_size
        self.disk = store if enabled else None  # a FeatureStore, or None
        self._store: dict[tuple[str, str], torch.Tensor] = {}
        self.computed = 0  # clips whose features were computed (cache misses)
        self.loaded = 0  # clips whose features came from the feature store
        self.seconds = 0.0  # time spent loading audio and running the front end

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, item: FeatureItem) -> bool:
        return item.cache_key in self._store

    def snapshot(self) -> FeatureCache:
        """A cache holding the same entries (the tensors are shared, not copied) that forgets
        and adds on its own; without the feature store (its entries are in memory already)."""
        copy = FeatureCache(self.frontend, enabled=self.enabled, batch_size=self.batch_size)
        copy._store = dict(self._store)
        return copy

    def forget(self, items: Iterable[FeatureItem]) -> None:
        """Drop entries (e.g. exemplars that left the memory)."""
        for item in items:
            self._store.pop(item.cache_key, None)

    def forget_source(self, source: str) -> None:
        """Drop every entry from `source` (e.g. the coded new clips after their phase)."""
        for key in [key for key in self._store if key[0] == source]:
            del self._store[key]

    def _load_stored(self, items: Sequence[FeatureItem]) -> list[FeatureItem]:
        """Fill the cache from the feature store where it can; returns the items still missing."""
        start = time.perf_counter()
        missing = []
        for item in items:
            stored = self.disk.load(item.key) if item.source == "clip" else None
            if stored is None:
                missing.append(item)
            else:
                self._store[item.cache_key] = torch.from_numpy(stored)
                self.loaded += 1
        self.seconds += time.perf_counter() - start
        return missing

    @torch.no_grad()
    def _compute(self, items: Sequence[FeatureItem]) -> list[torch.Tensor]:
        start = time.perf_counter()
        out: list[torch.Tensor | None] = [None] * len(items)
        waveform_rows = [i for i, item in enumerate(items) if item.domain == "waveform"]
        for i, item in enumerate(items):
            if item.domain != "waveform":
                out[i] = torch.as_tensor(np.asarray(item.load(), dtype=np.float32))
        self.frontend.eval()
        for start_row in range(0, len(waveform_rows), self.batch_size):
            rows = waveform_rows[start_row:start_row + self.batch_size]
            waves = torch.from_numpy(np.stack([np.asarray(items[r].load(), dtype=np.float32)
                                               for r in rows]))
            for r, feature in zip(rows, self.frontend(waves.to(device_of(self.frontend))).cpu()):
                out[r] = feature
        self.computed += len(items)
        self.seconds += time.perf_counter() - start
        return out  # type: ignore[return-value]

    def get(self, items: Sequence[FeatureItem]) -> torch.Tensor:
        """Features [N, 1, F, T'] for the items, computing (and caching) the missing ones."""
        if not self.enabled:
            return torch.stack(self._compute(items)) if items else torch.zeros(0)
        missing = [item for item in items if item.cache_key not in self._store]
        if self.disk is not None:
            missing = self._load_stored(missing)
        for item, feature in zip(missing, self._compute(missing)):
            self._store[item.cache_key] = feature
            if self.disk is not None and item.source == "clip":
                self.disk.save(item.key, feature.numpy())
        return torch.stack([self._store[item.cache_key] for item in items]) if items \
            else torch.zeros(0)
