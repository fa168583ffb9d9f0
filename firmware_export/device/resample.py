"""Band-limited resampling in numpy: the windowed-sinc polyphase filter torchaudio uses by default.

`torchaudio.functional.resample(x, orig, new)` (sinc_interp_hann, lowpass_filter_width 6, rolloff
0.99) prepares the training features; the torch-free runtime must feed the device model the same
signal, so this is the same filter design written with numpy: for rates reduced by their gcd to
orig -> new, output phase j of every block of `new` samples is a dot product of `2 * width + orig`
input samples with its own kernel. Both resamplers run the passes of edgecl.resample_plan, which
bounds that kernel for rates sharing no small factor with the model's.
"""

from __future__ import annotations

import math

import numpy as np

from edgecl.audio import fit_length
from edgecl.resample_plan import LOWPASS_FILTER_WIDTH, ROLLOFF, kernel_width, plan_resample


def sinc_kernels(orig: int, new: int) -> tuple[np.ndarray, int]:
    """Polyphase kernels [new, 2 * width + orig] (float64) and the padding `width`."""
    base_freq = min(orig, new) * ROLLOFF
    width = kernel_width(orig, new)
    taps = np.arange(-width, width + orig, dtype=np.float64) / orig
    times = (-np.arange(new, dtype=np.float64) / new)[:, None] + taps[None, :]
    times = np.clip(times * base_freq, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = np.cos(times * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    times = times * math.pi
    sinc = np.where(times == 0, 1.0, np.sin(times) / np.where(times == 0, 1.0, times))
    return sinc * window * (base_freq / orig), width


def resample(waveform: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a 1-D or 2-D `[channels, samples]` array to float32, ceil(n * new / orig) long."""
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
    signal = np.asarray(waveform, dtype=np.float32)
    if orig_rate == new_rate:
        return signal
    plan = plan_resample(orig_rate, new_rate)
    flat = signal.reshape(-1, signal.shape[-1])
    for orig, new in plan.passes:
        flat = _resample_pass(flat, orig, new)
    out = fit_length(flat, plan.output_samples(signal.shape[-1]))
    return np.ascontiguousarray(out.reshape(*signal.shape[:-1], -1), dtype=np.float32)


def _resample_pass(flat: np.ndarray, orig: int, new: int) -> np.ndarray:
    """One pass over `[channels, samples]` float32 for reduced rates orig -> new."""
    kernels, width = sinc_kernels(orig, new)
    length = flat.shape[-1]
    padded = np.pad(flat, ((0, 0), (width, width + orig)))
    # Blocks start every `orig` input samples; each yields `new` output samples.
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1], axis=-1)[:, ::orig]
    blocks = windows @ kernels.astype(np.float32).T  # [channels, n_blocks, new]
    return blocks.reshape(flat.shape[0], -1)[:, : math.ceil(new * length / orig)]
