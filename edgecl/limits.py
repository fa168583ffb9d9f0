"""The documented range of every numeric command-line option, and one-line checks against it.

A value outside its range (or NaN/infinite) is an EdgeclError naming the option, raised before any
work starts, so no option reaches numpy, torch or the file system as something they cannot take.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

from edgecl.errors import EdgeclError

SEED_RANGE = (0, 2**32 - 1)  # numpy seeds
MAX_CLIP_SECONDS = 600.0  # ten minutes per clip
SAMPLE_RATE_RANGE = (1000, 384_000)
MAX_MEMORY_BYTES = 2**40  # 1 TiB of stored exemplars
MAX_TRAIN_MACS = 10**18
MAX_TRAIN_SECONDS = 10**7  # about 116 days per phase
MAX_STEPS = 10**12
MAX_DISTILL_WEIGHT = 1000.0  # --distill-output, --distill-feature (0 = off)
MAX_ANALYTIC_EXPANSION = 16384  # the analytic head's R alone is then 0.5 GB in float32
MAX_DISTILL_TEMPERATURE = 100.0  # --distill-temperature
MAX_VAL_FRACTION = 0.9  # --val-fraction: at least a tenth of each task's clips must train

# Integer options of `edgecl train` / `edgecl bench memory-update` (config field -> range).
INT_RANGES: dict[str, tuple[int, int]] = {
    "seed": SEED_RANGE,
    "width": (1, 1024),
    "n_mels": (8, 256),
    "epochs": (1, 100_000),
    "batch_size": (1, 65_536),
    "threads": (1, 1024),
    "clips_per_class": (1, 100_000),
    "memory_size": (0, 10**8),
    "patience": (0, 100_000),
    "bn_recal_clips": (0, 10**7),
    "balanced_epochs": (0, 100_000),
    "n_tasks": (1, 100_000),
    "n_init_cls": (1, 100_000),
    "n_cls_a_task": (1, 100_000),
    "shots": (1, 100_000),  # training clips per new class in few-shot phases
    "sample_rate": SAMPLE_RATE_RANGE,
    "repeats": (1, 10_000),
}


def _describe(low, high) -> str:
    return f"an integer in [{low}, {high}]"


def shown(value, width: int = 40) -> str:
    """repr(value), shortened to `width` characters for a one-line message."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 3]}..."


def check_int(option: str, value, low: int, high: int) -> int:
    """`value` as an int in [low, high]; an EdgeclError naming `option` otherwise."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or not low <= number <= high:
        raise EdgeclError(f"{option}: expected {_describe(low, high)}, got {shown(value)}")
    return number


def check_float(option: str, value, low: float, high: float, *, low_inclusive: bool = False,
                what: str = "a number") -> float:
    """`value` as a finite float in (low, high] (or [low, high]); an EdgeclError naming `option`."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    above = number >= low if low_inclusive else number > low
    if not (math.isfinite(number) and above and number <= high):
        bracket = "[" if low_inclusive else "("
        span = (f">{'=' if low_inclusive else ''} {low:g}" if math.isinf(high)
                else f"in {bracket}{low:g}, {high:g}]")
        raise EdgeclError(f"{option}: expected {what} {span}, got {shown(value)}")
    return number


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric option: integers in [low, high], or finite numbers in
    (low, high] ([low, high] when `low_inclusive`), `what` naming them in the error."""

    low: float
    high: float
    integer: bool = False
    low_inclusive: bool = False
    what: str = "a number"

    def check(self, option: str, value):
        if self.integer:
            return check_int(option, value, int(self.low), int(self.high))
        return check_float(option, value, self.low, self.high, low_inclusive=self.low_inclusive,
                           what=self.what)


def int_range(name: str) -> Range:
    """The integer Range of INT_RANGES[name]."""
    return Range(*INT_RANGES[name], integer=True)


def check_seed(value, option: str = "--seed") -> int:
    """A seed numpy, torch and Python all accept: an integer in [0, 2**32)."""
    return check_int(option, value, *SEED_RANGE)


def option_range(low: float, high: float, *, integer: bool = True):
    """A click callback holding an option to [low, high] (finite): an out-of-range value is the
    usual one-line EdgeclError naming the option, raised while the command line is parsed."""

    def callback(ctx, param, value):
        if value is None:
            return value
        option = max(param.opts, key=len)
        if integer:
            return check_int(option, value, int(low), int(high))
        return check_float(option, value, low, high, low_inclusive=True)

    return callback
