"""A deployment budget for the TFLM build: the most arena (RAM) and flatbuffer (flash) bytes the
target part gives the model (`--arena-limit`, `--flash-limit`).

Checked twice. Before training (`check_before_training`): the untrained architecture at the run's
rate, mels, window and width is probed (firmware_export.tflm.probe: both figures depend on the
architecture and the input shape, not on trained values), and a configuration that cannot fit is
a one-line error naming the levers that would (fewer mels, a shorter window, a smaller width)
with their figures. One whose int8 build fits but whose 16-bit build (the recipe a phase ships
when int8 misses the parity rule) does not gets a warning in the run's log, with the window
that would fit it (`sixteen_bit_note`). After each phase (`limit_failures`): a build over a
limit is withheld with the reason, like a parity miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecl.budget.units import format_bytes
from edgecl.errors import EdgeclError

MIN_MELS = 32  # BC-ResNet's mels come in multiples of 32
MIN_WIDTH = 8
SIXTEEN_BIT_RECIPE = "16x8-int8-input"  # firmware_export.tflm.recipes: the first after int8
Probe = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class DeviceLimits:
    """Arena and flatbuffer ceilings in bytes (None: no limit)."""

    arena: int | None = None
    flash: int | None = None

    def __bool__(self) -> bool:
        return self.arena is not None or self.flash is not None

    def describe(self) -> dict[str, int | None]:
        return {"arena_bytes": self.arena, "flatbuffer_bytes": self.flash}


def limit_failures(arena_bytes: int, flatbuffer_bytes: int, limits: DeviceLimits | None
                   ) -> list[str]:
    """Why a build of these sizes does not fit `limits` (empty when it fits)."""
    failures = []
    if limits is not None and limits.arena is not None and arena_bytes > limits.arena:
        failures.append(f"arena {format_bytes(arena_bytes)} over --arena-limit "
                        f"{format_bytes(limits.arena)}")
    if limits is not None and limits.flash is not None and flatbuffer_bytes > limits.flash:
        failures.append(f"flatbuffer {format_bytes(flatbuffer_bytes)} over --flash-limit "
                        f"{format_bytes(limits.flash)}")
    return failures


def check_run_limits(config, sample_rate: int, clip_samples: int, n_classes: int,
                     log: Callable[[str], None] | None = None) -> dict[str, int] | None:
    """check_before_training for a run (edgecl.config.RunConfig) about to train on clips of
    `clip_samples` at `sample_rate` with `n_classes` classes in all (the largest head); nothing
    when it sets no limit or exports no TFLM build. Returns the probed figures, if any."""
    limits = DeviceLimits(config.arena_limit, config.flash_limit)
    if not limits or not config.export or config.target != "tflm":
        return None
    from firmware_export.device.windows import window_samples
    from models.frontend import FrontEndConfig

    front_end = FrontEndConfig.for_sample_rate(sample_rate, n_mels=config.n_mels)
    window = window_samples(clip_samples, sample_rate, config.tflm_window_seconds,
                            min_samples=int(front_end.to_dict()["n_fft"]))
    found = check_before_training(limits, sample_rate=sample_rate, window_samples=window,
                                  n_mels=config.n_mels, width=config.width, n_classes=n_classes,
                                  model_name=config.model)
    note = sixteen_bit_note(limits, sample_rate=sample_rate, window_samples=window,
                            n_mels=config.n_mels, width=config.width, n_classes=n_classes,
                            model_name=config.model)
    if log is not None:
        log(f"deployment budget: the untrained model needs {format_bytes(found['arena_bytes'])} "
            f"arena and {format_bytes(found['flatbuffer_bytes'])} flatbuffer at "
            f"{n_classes} classes, within {_limits_text(limits)}" + (f"; {note}" if note else ""))
    return found


def _limits_text(limits: DeviceLimits) -> str:
    parts = [f"--arena-limit {format_bytes(limits.arena)}" if limits.arena is not None else "",
             f"--flash-limit {format_bytes(limits.flash)}" if limits.flash is not None else ""]
    return " and ".join(part for part in parts if part)


def check_before_training(limits: DeviceLimits, *, sample_rate: int, window_samples: int,
                          n_mels: int, width: int, n_classes: int, model_name: str = "bc-resnet",
                          probe: Probe | None = None) -> dict[str, int]:
    """Probe the untrained architecture at this input; EdgeclError naming the levers that fit
    when it does not. Returns the probed {"arena_bytes", "flatbuffer_bytes"}."""
    def sizes(mels: int, window: int, model_width: int) -> dict[str, int]:
        return _probed_sizes(probe, sample_rate, window, model_width, n_mels=mels,
                             n_classes=n_classes, model_name=model_name)

    found = sizes(n_mels, window_samples, width)
    failures = _misses(found, limits)
    if not failures:
        return found
    levers = []
    for option, (mels, window, model_width) in _levers(n_mels, window_samples, width,
                                                       sample_rate):
        other = sizes(mels, window, model_width)
        fits = not _misses(other, limits)
        levers.append(f"{option} ({format_bytes(other['arena_bytes'])} arena, "
                      f"{format_bytes(other['flatbuffer_bytes'])} flatbuffer"
                      f"{'' if fits else ', still over'})")
    raise EdgeclError(
        f"{'; '.join(failures)}: the untrained {model_name} of width {width} at {sample_rate} Hz, {n_mels} "
        f"mels, {window_samples / sample_rate:g} s windows, {n_classes} classes needs "
        f"{format_bytes(found['arena_bytes'])} arena and {format_bytes(found['flatbuffer_bytes'])} "
        f"flatbuffer; levers: {'; '.join(levers) or 'none left'}")


def sixteen_bit_note(limits: DeviceLimits, *, sample_rate: int, window_samples: int,
                     n_mels: int, width: int, n_classes: int, model_name: str = "bc-resnet",
                     probe: Probe | None = None) -> str | None:
    """None when the build in 16-bit activations (SIXTEEN_BIT_RECIPE, what a phase whose int8
    build misses the parity rule ships) fits `limits` too; else what it needs and the shorter
    window that would fit it (check_before_training passed for int8 already). A warning, not an
    error: on many runs int8 meets the rule in every phase."""
    def sizes(window: int) -> dict[str, int]:
        return _probed_sizes(probe, sample_rate, window, width, n_mels=n_mels,
                             n_classes=n_classes, model_name=model_name,
                             recipe=SIXTEEN_BIT_RECIPE)

    found = sizes(window_samples)
    if not _misses(found, limits):
        return None
    note = (f"in 16-bit activations ({SIXTEEN_BIT_RECIPE}, the recipe after int8) it needs "
            f"{format_bytes(found['arena_bytes'])} arena, so a phase whose int8 build misses "
            f"the parity rule will withhold its TFLM build")
    window = window_samples // 2
    while window >= sample_rate // 8:
        shorter = sizes(window)
        if not _misses(shorter, limits):
            return (note + f" (--tflm-window-seconds {window / sample_rate:g}: "
                           f"{format_bytes(shorter['arena_bytes'])} arena in 16-bit activations)")
        window //= 2
    return note


def _probed_sizes(probe: Probe | None, sample_rate: int, window: int, width: int, *,
                  n_mels: int, n_classes: int, model_name: str, recipe: str | None = None
                  ) -> dict[str, int]:
    """{"arena_bytes", "flatbuffer_bytes"} of the untrained model at this input, from `probe`
    (firmware_export.tflm.probe.probe unless given), in `recipe` (the probe's int8 unless
    named)."""
    if probe is None:
        from firmware_export.tflm.probe import probe
    named = {} if recipe is None else {"recipe": recipe}
    figures = probe(sample_rate, window / sample_rate, width, n_classes=n_classes,
                    n_mels=n_mels, model_name=model_name, **named)
    return {key: int(figures[key]) for key in ("arena_bytes", "flatbuffer_bytes")}


def _misses(sizes: dict[str, int], limits: DeviceLimits) -> list[str]:
    """limit_failures of probed sizes."""
    return limit_failures(sizes["arena_bytes"], sizes["flatbuffer_bytes"], limits)


def _levers(n_mels: int, window: int, width: int, sample_rate: int
            ) -> list[tuple[str, tuple[int, int, int]]]:
    """One step of each lever from (n_mels, window, width): half the mels (arena), half the
    window (arena), half the width (arena and flatbuffer)."""
    levers = []
    if n_mels // 2 >= MIN_MELS and (n_mels // 2) % MIN_MELS == 0:
        levers.append((f"--n-mels {n_mels // 2}", (n_mels // 2, window, width)))
    if window // 2 >= sample_rate // 8:
        levers.append((f"--tflm-window-seconds {window // 2 / sample_rate:g}",
                       (n_mels, window // 2, width)))
    if width // 2 >= MIN_WIDTH:
        levers.append((f"--width {width // 2}", (n_mels, window, width // 2)))
    return levers
