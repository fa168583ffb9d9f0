"""How a clip is resampled from its file's rate to the model's, with the filter's memory bounded.

Both resamplers (torchaudio's in training, firmware_export.device.resample's numpy copy in the
torch-free runtime) use the same windowed-sinc design: for rates reduced by their gcd to
orig -> new, it builds `new` phases of `2 * width + orig` taps (`kernel_taps`). For the common
rates (8, 11.025, 16, 22.05, 32, 44.1, 48, 96 kHz, ...) that is at most a million taps, but rates
that share no small factor with the model's blow it up: 44,101 Hz -> 16,000 Hz is 706 million
taps (5.7 GB in float64), and a file may declare any rate from 1 Hz to 2**31 - 1 Hz.

`plan_resample` keeps every pass within MAX_KERNEL_TAPS:
- a ratio whose kernel fits is one exact pass: the path every common rate took before, unchanged;
- a ratio beyond STAGE_FACTOR either way (a file at a few Hz, or at hundreds of MHz) is first
  brought toward 1 by exact integer passes of that factor;
- otherwise the ratio is replaced by the nearest fraction whose kernel fits
  (`Fraction.limit_denominator`): the clip is played that much faster or slower, a pitch and
  time error of `error_ppm` parts per million. It is below 1 ppm for most rates (44,101 ->
  16,000 Hz: 0.23 ppm) and largest next to a simple ratio (177,306 -> 177,376 Hz: 300 ppm, half
  a cent); the test sweep holds it to MAX_ERROR_PPM (0.1 %, under 2 cents, far below what a
  listener or a model tells apart).
The output keeps the exact length ceil(samples * new_rate / orig_rate) either way.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

LOWPASS_FILTER_WIDTH = 6  # torchaudio.functional.resample's defaults
ROLLOFF = 0.99
MAX_KERNEL_TAPS = 1 << 21  # 16 MiB per float64 array of the kernel; common rates need < 1M taps
MAX_ERROR_PPM = 1000.0  # bound of the approximation's rate error (see the sweep in the tests)
STAGE_FACTOR = 1000  # integer passes of a ratio beyond reach: 13k taps down, 15k up


def kernel_width(orig: int, new: int) -> int:
    """Zero padding on each side of the input (torchaudio's `width`) for reduced rates."""
    return math.ceil(LOWPASS_FILTER_WIDTH * orig / (min(orig, new) * ROLLOFF))


def kernel_taps(orig: int, new: int) -> int:
    """Size of the filter bank, `new` phases of `2 * width + orig` taps, for reduced rates."""
    return new * (2 * kernel_width(orig, new) + orig)


@dataclass(frozen=True)
class ResamplePlan:
    """Passes `(orig, new)` (reduced rates) taking `orig_rate` to `new_rate`."""

    orig_rate: int
    new_rate: int
    passes: tuple[tuple[int, int], ...]

    @property
    def exact(self) -> bool:
        """True when the passes change the rate by exactly new_rate / orig_rate."""
        return self.error_ppm == 0

    @property
    def error_ppm(self) -> float:
        """Relative error of the rate actually applied, in parts per million (pitch and time)."""
        applied = math.prod(Fraction(new, orig) for orig, new in self.passes)
        wanted = Fraction(self.new_rate, self.orig_rate)
        return float(abs(applied / wanted - 1)) * 1e6

    def output_samples(self, samples: int) -> int:
        """Samples out for `samples` in: ceil(samples * new_rate / orig_rate)."""
        return -(-samples * self.new_rate // self.orig_rate)


@functools.lru_cache(maxsize=256)
def plan_resample(orig_rate: int, new_rate: int) -> ResamplePlan:
    """The passes that resample `orig_rate` to `new_rate` within MAX_KERNEL_TAPS each."""
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
    if orig_rate == new_rate:
        return ResamplePlan(orig_rate, new_rate, ())
    passes = _passes(Fraction(orig_rate, new_rate))
    return ResamplePlan(orig_rate, new_rate, tuple(p for p in passes if p != (1, 1)))


def _passes(ratio: Fraction) -> list[tuple[int, int]]:
    """Passes for `ratio` = orig / new."""
    orig, new = ratio.numerator, ratio.denominator
    if kernel_taps(orig, new) <= MAX_KERNEL_TAPS:
        return [(orig, new)]
    if ratio > STAGE_FACTOR:  # far above the target: bring the rate down by an integer factor
        return [(STAGE_FACTOR, 1), *_passes(ratio / STAGE_FACTOR)]
    if ratio < Fraction(1, STAGE_FACTOR):  # far below: up by an integer factor
        return [(1, STAGE_FACTOR), *_passes(ratio * STAGE_FACTOR)]
    near = _nearest_fitting(ratio)
    return [(near.numerator, near.denominator)]


def _nearest_fitting(ratio: Fraction) -> Fraction:
    """The nearest fraction to `ratio` (within a factor STAGE_FACTOR of 1) whose kernel fits: the
    approximation with the largest denominator bound that fits, found by bisection (the kernel
    grows with the bound). 1 / STAGE_FACTOR <= ratio makes its numerator at least 1."""
    def fits(bound: int) -> bool:
        near = ratio.limit_denominator(bound)
        return near.numerator == 0 or kernel_taps(near.numerator,
                                                  near.denominator) <= MAX_KERNEL_TAPS

    low, high = 1, ratio.denominator  # fits(1): at most STAGE_FACTOR + 2 * width taps
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return ratio.limit_denominator(low)
