"""The log-mel front end in numpy, as the bundle's C front end computes it (torch-free).

Same transform as models.frontend.LogMelFrontEnd (conv STFT): reflect padding by n_fft / 2 at both
ends, frames every hop_length samples, periodic Hann window, DFT over the bins that some mel filter
uses, power, HTK mel filterbank without normalisation, log(mel + 1e-6). The reflect padding is a
fixed-index gather (`reflect_indices`), as in the generated C, and the filterbank is torchaudio's
formula evaluated in float64 here (`mel_filterbank`), so the constants need no torch.

Output layout: [n_mels, frames], mel-major, the TFLM model's input [1, 1, n_mels, frames].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from edgecl.blas import blas_threads

LOG_OFFSET = 1e-6


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, f_min: float, f_max: float,
                   n_mels: int) -> np.ndarray:
    """torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk") in float64:
    [n_fft // 2 + 1, n_mels]."""
    n_freqs = n_fft // 2 + 1
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    f_pts = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    bank: np.ndarray = np.maximum(0.0, np.minimum(down, up))
    return bank


def reflect_indices(n_samples: int, half: int) -> np.ndarray:
    """Source index of every sample of a clip reflect-padded by `half` at both ends (edge sample
    not repeated), as a fixed gather: padded = clip[reflect_indices(len(clip), half)]."""
    if not 0 <= half < n_samples:
        raise ValueError(f"reflect padding of {half} needs a clip longer than that, got "
                         f"{n_samples} samples")
    index = np.arange(-half, n_samples + half)
    index = np.abs(index)
    return np.where(index >= n_samples, 2 * (n_samples - 1) - index, index)


@dataclass(frozen=True)
class LogMelPlan:
    """Every constant of the front end for one clip length: what the C front end stores."""

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    clip_samples: int
    first_bin: int
    window: np.ndarray  # [n_fft] periodic Hann
    filterbank: np.ndarray  # [n_mels, bins] over bins first_bin .. first_bin + bins - 1

    @classmethod
    def from_config(cls, config: dict[str, Any], clip_samples: int) -> LogMelPlan:
        """From a manifest's `frontend` entry (models.frontend.FrontEndConfig.to_dict())."""
        n_fft, n_mels = int(config["n_fft"]), int(config["n_mels"])
        bank = mel_filterbank(int(config["sample_rate"]), n_fft, float(config["f_min"]),
                              float(config["f_max"]), n_mels)
        used = np.nonzero(np.abs(bank).sum(axis=1) > 0)[0]
        first, last = int(used[0]), int(used[-1]) + 1
        window = 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(n_fft) / n_fft)
        return cls(sample_rate=int(config["sample_rate"]), n_fft=n_fft,
                   hop_length=int(config["hop_length"]), n_mels=n_mels,
                   clip_samples=int(clip_samples), first_bin=first, window=window,
                   filterbank=np.ascontiguousarray(bank[first:last].T))

    @property
    def n_bins(self) -> int:
        return int(self.filterbank.shape[1])

    @property
    def n_frames(self) -> int:
        return self.clip_samples // self.hop_length + 1

    def dft_basis(self) -> tuple[np.ndarray, np.ndarray]:
        """Windowed cosine and sine rows [bins, n_fft] (float64), phase index (k * n) mod n_fft
        as the C tables use it."""
        k = np.arange(self.first_bin, self.first_bin + self.n_bins)[:, None]
        n = np.arange(self.n_fft)[None, :]
        phase = 2.0 * math.pi * ((k * n) % self.n_fft) / self.n_fft
        return np.cos(phase) * self.window, np.sin(phase) * self.window

    @cached_property
    def _dft_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """dft_basis, computed once per plan (a window's log-mel used to spend a tenth of its
        time rebuilding it)."""
        return self.dft_basis()

    @cached_property
    def _frame_indices(self) -> np.ndarray:
        """[frames, n_fft] index of every frame's samples in the unpadded clip: the reflect
        padding and the framing as one gather."""
        padded = reflect_indices(self.clip_samples, self.n_fft // 2)
        starts = np.arange(self.n_frames) * self.hop_length
        indices: np.ndarray = padded[starts[:, None] + np.arange(self.n_fft)[None, :]]
        return indices


def logmel(plan: LogMelPlan, waveform: np.ndarray) -> np.ndarray:
    """One clip [clip_samples] -> log-mel [n_mels, frames] float32.

    The products run on one BLAS thread: a window's are too small for a second thread to pay,
    and its waiting costs CPU time. On one thread the last bits of a few float64 products differ
    from a two-thread run's (edgecl.blas); no float32 log-mel value did in 30.6 million measured
    (400 ESC-50 clips at 44.1 and 8 kHz, 1 s windows), about 1e-3 expected there from the
    float64 differences' size (tests/test_tflm_frontend.py compares with the first form)."""
    clip = np.asarray(waveform, dtype=np.float64).reshape(-1)
    if len(clip) != plan.clip_samples:
        raise ValueError(f"log-mel front end: expected {plan.clip_samples} samples, got "
                         f"{len(clip)}")
    frames = clip[plan._frame_indices]  # [frames, n_fft]
    cos_rows, sin_rows = plan._dft_rows
    with blas_threads(1):
        power = (frames @ cos_rows.T) ** 2 + (frames @ sin_rows.T) ** 2  # [frames, bins]
        mel = plan.filterbank @ power.T  # [n_mels, frames]
    result: np.ndarray = np.log(mel + LOG_OFFSET).astype(np.float32)
    return result


def quantize(values: np.ndarray, scale: float, zero_point: int,
             dtype: type[np.integer] = np.int8) -> np.ndarray:
    """float -> integer codes of `dtype` (int8, or int16 for a 16-bit input) as the C helper
    does it: round half away from zero, then clamp to the type's range."""
    scaled = np.asarray(values, dtype=np.float32) / np.float32(scale)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    limits = np.iinfo(dtype)
    codes: np.ndarray = np.clip(rounded + int(zero_point), limits.min, limits.max).astype(dtype)
    return codes
