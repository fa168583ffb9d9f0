"""Log-mel feature cache: the front end is fixed (no trainable parameters), so each clip's log-mel
is computed once and reused by every epoch, validation pass and memory update.

Entries are keyed by a string: a clip's key for clips read from disk, "memory:<key>" for replay
exemplars, whose features come from the *decoded* exemplar (lossy formats change them). With the
cache disabled (`enabled=False`, for measuring what it saves) every request recomputes the
features from the audio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

Loader = Callable[[], np.ndarray]


class FeatureCache:
    """Maps keys to log-mel tensors [1, F, T'] computed by `frontend` from waveforms [T].

    `compute(items)` takes (key, loader, domain) triples: domain "waveform" runs the front end on
    loader(); domain "logmel" means loader() already returns the features.
    """

    def __init__(self, frontend: torch.nn.Module, enabled: bool = True, batch_size: int = 64) -> None:
        self.frontend = frontend
        self.enabled = enabled
        self.batch_size = batch_size
        self._store: dict[str, torch.Tensor] = {}
        self.computed = 0  # clips whose features were computed (cache misses)
        self.seconds = 0.0  # time spent loading audio and running the front end

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: str) -> bool:
        return key in self._store

    def forget(self, keys: Sequence[str]) -> None:
        """Drop entries (e.g. exemplars that left the memory)."""
        for key in keys:
            self._store.pop(key, None)

    @torch.no_grad()
    def _compute(self, items: Sequence[tuple[str, Loader, str]]) -> list[torch.Tensor]:
        start = time.perf_counter()
        out: list[torch.Tensor | None] = [None] * len(items)
        waveform_rows = [i for i, (_, _, domain) in enumerate(items) if domain == "waveform"]
        for i, (_, loader, domain) in enumerate(items):
            if domain != "waveform":
                out[i] = torch.as_tensor(np.asarray(loader(), dtype=np.float32))
        self.frontend.eval()
        for start_row in range(0, len(waveform_rows), self.batch_size):
            rows = waveform_rows[start_row:start_row + self.batch_size]
            waves = torch.from_numpy(np.stack([np.asarray(items[r][1](), dtype=np.float32)
                                               for r in rows]))
            for r, feature in zip(rows, self.frontend(waves)):
                out[r] = feature
        self.computed += len(items)
        self.seconds += time.perf_counter() - start
        return out  # type: ignore[return-value]

    def get(self, items: Sequence[tuple[str, Loader, str]]) -> torch.Tensor:
        """Features [N, 1, F, T'] for the items, computing (and caching) the missing ones."""
        if not self.enabled:
            return torch.stack(self._compute(items)) if items else torch.zeros(0)
        missing = [item for item in items if item[0] not in self._store]
        for (key, _, _), feature in zip(missing, self._compute(missing)):
            self._store[key] = feature
        return torch.stack([self._store[key] for key, _, _ in items]) if items else torch.zeros(0)
