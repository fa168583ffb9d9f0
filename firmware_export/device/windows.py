"""Windowed inference of the TFLM build: the device model takes one window of the clip, the device
runs the front end and the model per window and averages the scores over the clip's windows.

Why: the tensor arena holds the stem conv's output for the model's whole input, so it grows with
the input's length (a 5 s, 44.1 kHz ESC-50 clip needs about 1.5 MiB); a fixed window bounds it
whatever the clip's length.

When (`window_samples`): `--tflm-window-seconds` unset means auto, windows of AUTO_WINDOW_SECONDS
(1 s, the length of DCASE 2024 Task 1 clips) when the clip is longer than that, else the whole
clip (so 1 s models build as before); 0 means the whole clip; a positive value is the window's
length, capped at the clip's.

How the clip is split (`window_starts`): consecutive windows from the clip's start; when the clip
is not a whole number of windows, one last window ends at the clip's end (overlapping the one
before), so every sample is seen and no window is padded. A clip shorter than one window (only
from a caller that passes one; the runtime first fits clips to the model's clip length) is
zero-padded at its end to one window, as the runtime pads short clips.

Pooling (`pool`): the mean of the dequantized logits over the windows. BC-ResNet ends in a global
mean over time before its classifier, so averaging logits over windows is the closest match to
running it on the whole clip (exact for the classifier, which is affine, up to the windows' own
receptive-field edges and the per-window front end's reflect padding).

numpy only, so the torch-free runtime uses it too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.errors import EdgeclError

AUTO_WINDOW_SECONDS = 1.0
WINDOW_OPTION = "--tflm-window-seconds"
POOLING = "mean of the dequantized logits over the clip's windows"


def window_samples(clip_samples: int, sample_rate: int, seconds: float | None,
                   min_samples: int = 1) -> int:
    """The window length in samples for `seconds` (None: auto, 0: the whole clip); see the module
    doc. `min_samples` is the front end's shortest input (its FFT length)."""
    if seconds is None:
        auto = round(AUTO_WINDOW_SECONDS * sample_rate)
        window = auto if clip_samples > auto else clip_samples
    elif seconds == 0:
        window = clip_samples
    elif seconds < 0:
        raise EdgeclError(f"{WINDOW_OPTION}: expected a length in seconds >= 0, got {seconds:g}")
    else:
        window = min(clip_samples, round(seconds * sample_rate))
    if window < min_samples:
        raise EdgeclError(f"{WINDOW_OPTION}: a window of {seconds:g} s is {window} samples at "
                          f"{sample_rate} Hz, shorter than the front end's FFT ({min_samples} "
                          f"samples)")
    return int(window)


def window_starts(n_samples: int, window: int) -> list[int]:
    """First sample of each window of a clip of `n_samples`: 0, window, 2 window, ... and, when
    the clip is not a whole number of windows, n_samples - window last. One window (start 0) when
    the clip is no longer than one window."""
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, window))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def split_windows(clip: np.ndarray, window: int) -> np.ndarray:
    """One clip [T] -> its windows [n, window] float32 (window_starts; a short clip zero-padded)."""
    clip = np.asarray(clip, dtype=np.float32).reshape(-1)
    if len(clip) < window:
        clip = np.pad(clip, (0, window - len(clip)))
    return np.stack([clip[start:start + window] for start in window_starts(len(clip), window)])


def pool(window_logits: np.ndarray) -> np.ndarray:
    """Logits of a clip's windows [n, classes] -> the clip's scores [classes] (their mean)."""
    scores: np.ndarray = np.asarray(window_logits).mean(axis=0)
    return scores


def describe(window: int, clip_samples: int, sample_rate: int, seconds: float | None) -> dict[str, Any]:
    """The manifest's record of the windowing."""
    starts = window_starts(clip_samples, window)
    rule = ("auto" if seconds is None else "whole clip" if seconds == 0
            else f"{WINDOW_OPTION} {seconds:g}")
    return {"samples": window, "seconds": window / sample_rate, "per_clip": len(starts),
            "starts": starts, "rule": rule, "pooling": POOLING}
