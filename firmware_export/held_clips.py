"""A phase's held-out clips, held as the 16-bit samples they were decoded from when that is exact,
handed out as float32 a batch at a time.

The held-out clips are read by every pass of a phase's export (the fp32 check, the int8 search,
the TFLM builds, the embedding check), always a batch or a clip at a time. A 16-bit PCM file
decodes to float32 samples that are each an int16 code / 32768, so the codes hold the same clips
in half the bytes (0.44 MB instead of 0.88 MB a 5 s clip at 44.1 kHz; phase 4 of the ESC-50
layout holds 550) and every batch handed out is the same float32 bytes as the decoded one. Clips
that are not such codes (resampled, float or 24-bit files) are held as float32, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

# float32 samples that are int16 codes / SCALE (soundfile's decoding of 16-bit PCM): exact both
# ways, a power of two
SCALE = np.float32(32768.0)


def int16_codes(waveform: np.ndarray) -> np.ndarray | None:
    """The int16 codes whose / SCALE is exactly `waveform` (float32), None when there are none."""
    scaled = waveform * SCALE  # exact: a power of two
    if not np.all((scaled >= -32768.0) & (scaled <= 32767.0) & (scaled == np.round(scaled))):
        return None
    if np.any(np.signbit(scaled) & (scaled == 0)):  # -0.0: the code 0 gives +0.0
        return None
    return scaled.astype(np.int16)


class HeldClips:
    """Clips [clips, samples] that index like a float32 array: `clips[i]`, `clips[a:b]`,
    `clips[indices]` give float32 copies (from int16 codes when held so), `len` and `shape` are
    the array's. The float32 bytes handed out are the ones given."""

    def __init__(self, store: np.ndarray) -> None:
        if store.dtype not in (np.int16, np.float32) or store.ndim != 2:
            raise ValueError(f"HeldClips: expected an int16 or float32 [clips, samples] store, "
                             f"got {store.dtype} {store.shape}")
        self._store = store

    @classmethod
    def decoded(cls, clips: Sequence[Any], waveform: Callable[[Any], np.ndarray]) -> HeldClips:
        """The clips' waveforms (`waveform(clip)`, float32 [samples]) filled in place clip by
        clip: as int16 codes while every clip is exactly such codes, else as float32."""
        first = np.asarray(waveform(clips[0]), dtype=np.float32)
        codes = int16_codes(first)
        store = np.empty((len(clips), *first.shape),
                         dtype=np.float32 if codes is None else np.int16)
        store[0] = first if codes is None else codes
        for row, clip in enumerate(clips[1:], start=1):
            wave = np.asarray(waveform(clip), dtype=np.float32)
            codes = int16_codes(wave) if store.dtype == np.int16 else None
            if store.dtype == np.int16 and codes is None:
                store = _as_float32(store)  # a clip that is not 16-bit codes: all as float32
            store[row] = wave if codes is None else codes
        return cls(store)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._store.shape)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def nbytes_held(self) -> int:
        return int(self._store.nbytes)

    def __len__(self) -> int:
        return len(self._store)

    def __getitem__(self, key) -> np.ndarray:
        part = self._store[key]
        if part.dtype == np.float32:
            return np.array(part, dtype=np.float32)  # a copy, as from the codes
        return part.astype(np.float32) / SCALE

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every clip as one float32 array (a full copy: the passes of an export take slices)."""
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def _as_float32(codes: np.ndarray) -> np.ndarray:
    """int16 codes [clips, samples] as the float32 samples they stand for, row by row."""
    store = np.empty(codes.shape, dtype=np.float32)
    for row, part in enumerate(codes):
        store[row] = part.astype(np.float32) / SCALE
    return store
