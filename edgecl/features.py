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
same files computes none of them. A stored entry is used only when it is float32, finite and of
the shape this front end gives a clip of the store's length; any other is computed again.

The front end runs one clip at a time. Its matmuls take other kernels for a small batch than for
a large one (on an AVX-512 machine at 16 kHz: a clip's log-mel computed in a batch of 1-8 differs
in the last bits from the same clip's in a batch of 16 or more), so batched features would depend
on which clips happened to share a request: the store would keep whatever the first run to compute
a clip got, and a run's figures would depend on the workspace's history (and a resumed run on its
cache). On one thread, one clip at a time is about as fast at 16 kHz 1 s (1.4-1.8 against
1.7-2.4 ms a clip in two runs on a loaded 2-core machine) and three times faster at 44.1 kHz 5 s
(9-13 against 27-58 ms): scripts/speed_frontend_batch.py. The thread count
changes the bits too (16 kHz, one clip, 1 against 2 threads), and runs sharing a store may use
different `--threads`, so the front end always runs on one thread.

For the same reason it always runs on the CPU in float32, whatever device the run trains on: the
stored features are shared by CPU runs, GPU runs and every grid trial, and they are what the
device computes (the shipped front end is float32 on a CPU). A GPU's convolutions with TF32 differ
by up to ~0.2 in a log-mel. The front end is a small share of a run's work (each clip once, then
cached and stored), so keying the store by device and precision instead would buy little speed
for features that no longer match the device's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from edgecl.device import device_of, torch_threads

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

    def __init__(self, frontend: torch.nn.Module, enabled: bool = True, store=None) -> None:
        self.frontend = frontend
        self._cpu_frontend: torch.nn.Module | None = None  # a copy when `frontend` is elsewhere
        self.enabled = enabled
        self.disk = store if enabled else None  # a FeatureStore, or None
        self._store: dict[tuple[str, str], torch.Tensor] = {}
        self.computed = 0  # clips whose features were computed (cache misses)
        self.loaded = 0  # clips whose features came from the feature store
        self.seconds = 0.0  # time spent loading audio and running the front end
        self._shape: tuple[int, ...] | None = None  # of one clip's features, once known

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, item: FeatureItem) -> bool:
        return item.cache_key in self._store

    def snapshot(self) -> FeatureCache:
        """A cache holding the same entries (the tensors are shared, not copied) that forgets
        and adds on its own; without the feature store (its entries are in memory already)."""
        clone = FeatureCache(self.frontend, enabled=self.enabled)
        clone._store = dict(self._store)
        clone._cpu_frontend = self._cpu_frontend
        return clone

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
        shape = self._clip_shape()
        for item in items:
            stored = self.disk.load(item.key, shape) if item.source == "clip" else None
            if stored is None:
                missing.append(item)
            else:
                self._store[item.cache_key] = torch.from_numpy(stored)
                self.loaded += 1
        self.seconds += time.perf_counter() - start
        return missing

    def cpu_frontend(self) -> torch.nn.Module:
        """The front end on the CPU, in float32 and eval mode (a copy when the model's is on
        another device; the front end has no trainable weights, so the copy never goes stale)."""
        if device_of(self.frontend).type == "cpu":
            return self.frontend.eval()
        if self._cpu_frontend is None:
            self._cpu_frontend = copy.deepcopy(self.frontend).to("cpu", torch.float32).eval()
        return self._cpu_frontend

    @torch.no_grad()
    def _clip_shape(self) -> tuple[int, ...]:
        """The shape [1, F, T'] the front end gives a clip of the store's length: a stored entry
        of any other shape is not this clip's features."""
        if self._shape is None:
            device = device_of(self.frontend)
            self.frontend.eval()
            with torch_threads(1):
                zeros = torch.zeros(1, self.disk.clip_samples, device=device)
                self._shape = tuple(self.frontend(zeros).shape[1:])
        return self._shape

    @torch.no_grad()
    def _compute(self, items: Sequence[FeatureItem]) -> list[torch.Tensor]:
        start = time.perf_counter()
        frontend = self.cpu_frontend()
        out = []
        with torch_threads(1):  # the bits also depend on the thread count (see above)
            for item in items:
                array = torch.from_numpy(np.asarray(item.load(), dtype=np.float32))
                # one clip per front-end call: a clip's features must not depend on its batch
                out.append(array if item.domain != "waveform" else frontend(array[None])[0])
        self.computed += len(items)
        self.seconds += time.perf_counter() - start
        return out

    def get(self, items: Sequence[FeatureItem]) -> torch.Tensor:
        """Features [N, 1, F, T'] for the items, computing (and caching) the missing ones."""
        if not self.enabled:
            return torch.stack(self._compute(items)) if items else torch.zeros(0)
        missing = [item for item in items if item.cache_key not in self._store]
        if self.disk is not None:
            missing = self._load_stored(missing)
        for item, feature in zip(missing, self._compute(missing), strict=True):
            self._store[item.cache_key] = feature
            if self.disk is not None and item.source == "clip":
                self.disk.save(item.key, feature.numpy())
        return torch.stack([self._store[item.cache_key] for item in items]) if items \
            else torch.zeros(0)
