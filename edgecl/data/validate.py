"""Checks a dataset passes before any training starts, so a bad file is found in seconds.

`check_unique_clips` refuses a clip listed twice (a duplicate row, a clip with two labels, or a
clip in both train and test: test leakage); `validate_dataset` adds that every class to be learnt
has test clips and that every clip decodes (each file read once, with a progress bar for large
sets on a terminal). Every failure is one EdgeclError naming the file and the row or clip.
`check_input_lengths` refuses clips (and TFLM windows) too short for the model (its front end's
FFT, its pooling), naming the option and the shortest length it takes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence

from edgecl.audio import check_audio
from edgecl.data.records import Clip, DatasetSplit
from edgecl.errors import EdgeclError

PROGRESS_FROM = 200  # clips; smaller sets decode in well under a second
MAX_PROBE_SECONDS = 10.0  # shortest_input looks no further for a length the model takes


def check_unique_clips(entries: Iterable[tuple[str, Clip]], source: str) -> None:
    """Every audio file listed once. `entries` are (where, clip) pairs, `where` naming the row
    (e.g. "line 7") for messages; `source` names the listing (the manifest CSV)."""
    first: dict[str, tuple[str, Clip]] = {}
    for where, clip in entries:
        key = str(clip.path)
        if key not in first:
            first[key] = (where, clip)
            continue
        where0, clip0 = first[key]
        if clip0.split != clip.split:
            problem = (f"listed as {clip0.split} at {where0} and as {clip.split} at {where} "
                       f"(test leakage: a clip may not be both trained and tested on)")
        elif clip0.label != clip.label:
            problem = (f"has two labels, {clip0.label!r} at {where0} and {clip.label!r} at "
                       f"{where}")
        else:
            problem = f"listed twice, at {where0} and {where} (duplicate row)"
        raise EdgeclError(f"{source}: {where}: clip {clip.path} {problem}")


def check_input_lengths(model, split: DatasetSplit, config) -> None:
    """Before a run creates anything: `model` (waveform in) takes the split's clips, and with
    `--target tflm` the TFLM build's windows too; else an EdgeclError naming --clip-seconds or
    --tflm-window-seconds and the shortest length that works (too short for the front end's
    FFT or the model's pooling would otherwise fail in the first phase or its export). One
    forward pass of a silent clip in eval mode (no batch statistics or random draws change),
    and a few more on short clips to find the shortest when it fails."""
    rate = split.sample_rate
    shortest = shortest_input(model, split.clip_samples, rate)
    if shortest is not None:
        raise EdgeclError(f"--clip-seconds: {split.clip_seconds:g} s at {rate} Hz is "
                          f"{split.clip_samples} samples, too short for the front end's FFT and "
                          f"the model's pooling: give at least {_seconds(shortest, rate)} s")
    if config.export and config.target == "tflm":
        from firmware_export.device.windows import WINDOW_OPTION, window_samples

        window = window_samples(split.clip_samples, rate, config.tflm_window_seconds,
                                min_samples=model.frontend.config.n_fft)
        shortest = shortest_input(model, window, rate)
        if shortest is not None:
            raise EdgeclError(f"{WINDOW_OPTION}: a window of {window} samples at {rate} Hz is "
                              f"too short for the model's pooling: give at least "
                              f"{_seconds(shortest, rate)} s")


def shortest_input(model, samples: int, sample_rate: int) -> int | None:
    """None when `model` takes inputs of `samples`, else the fewest samples it takes (searched
    up to MAX_PROBE_SECONDS; None too when no length there works: not a matter of length, the
    model's own error comes at its first use)."""
    if _takes(model, samples):
        return None
    longest = int(MAX_PROBE_SECONDS * sample_rate)
    low, high = samples, max(1, 2 * samples)
    while not _takes(model, high):
        if high >= longest:
            return None
        low, high = high, min(longest, 2 * high)
    while high - low > 1:  # low fails, high works
        middle = (low + high) // 2
        low, high = (low, middle) if _takes(model, middle) else (middle, high)
    return high


def _seconds(samples: int, sample_rate: int) -> str:
    """`samples` in seconds, rounded up to the millisecond (so that length has enough)."""
    return f"{math.ceil(samples / sample_rate * 1000) / 1000:g}"


def _takes(model, samples: int) -> bool:
    import torch

    device = next(model.parameters()).device
    training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, samples, device=device))
        return True
    except (RuntimeError, EdgeclError):
        return False
    finally:
        model.train(training)


def check_test_clips(split: DatasetSplit, classes: Sequence[str] | None = None) -> None:
    """At least one test clip for each of `classes` (default: every class of the split)."""
    classes = list(split.classes if classes is None else classes)
    if not split.test:
        raise EdgeclError(f"{split.source or split.name}: no test clips; every class learnt "
                          f"needs at least one to be measured")
    counts = split.counts("test")
    missing = [label for label in classes if not counts.get(label)]
    if missing:
        raise EdgeclError(f"{split.source or split.name}: class {missing[0]!r} has no test clips "
                          f"({len(missing)} such class(es)); every class learnt needs at least "
                          f"one to be measured")


def check_decodable(clips: Sequence[Clip], progress: bool | None = None) -> None:
    """Decode every clip once (soundfile, in bounded blocks: a long file costs no memory); the
    first bad file raises its EdgeclError."""
    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    show = progress and len(clips) >= PROGRESS_FROM
    for clip in tqdm(clips, desc="checking clips", unit="clip", file=sys.stderr,
                     disable=not show, leave=False):
        check_audio(clip.path)


def validate_dataset(split: DatasetSplit, classes: Sequence[str] | None = None,
                     progress: bool | None = None) -> None:
    """Every check above on `split`; `classes` are the classes a run will learn (default all)."""
    source = split.source or split.name
    entries = [(f"{clip.split} clip {i}", clip) for part in (split.train, split.val, split.test)
               for i, clip in enumerate(part)]
    check_unique_clips(entries, source)
    check_test_clips(split, classes)
    check_decodable([*split.train, *split.val, *split.test], progress)
