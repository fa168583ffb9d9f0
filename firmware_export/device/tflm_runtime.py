"""Run a bundle's TFLM model in TFLM's own interpreter (the `tflite-micro` package), torch-free.

The model takes the int8 log-mel of one window of the clip (the whole clip when the build is not
windowed) and returns int8 logits; the log-mel comes from the numpy front end that computes what
the bundle's C front end computes (firmware_export.device.logmel), and a clip's score is the mean
of its windows' dequantized logits (`clip_logits`, firmware_export.device.windows), as the
exporter's parity check computes it. `load_tflm_bundle` verifies every bundle file against the
manifest's sha256 before anything runs; on a learnt version (firmware_export.device.tflm_head) it
runs the TFLM embedding model with the analytic head in float. `find_arena` finds the tensor
arena the model needs by letting TFLM allocate it: the smallest size (a multiple of ARENA_STEP)
that allocates.

`tflite-micro` is an optional dependency (`pip install edgecl[tflm]`): imported on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import EdgeclError
from firmware_export.device.layout import LABELS, MANIFEST, MODEL_TFLM
from firmware_export.device.logmel import LogMelPlan, logmel, quantize
from firmware_export.device.manifest import refuse_withheld, verify_bundle
from firmware_export.device.windows import pool, split_windows

ARENA_STEP = 16
MAX_ARENA = 64 << 20
GALLOP_STEP = 1024  # find_arena's first step up from an allocation record's sum that fails


def micro_runtime() -> Any:
    """tflite_micro's Python runtime, or EdgeclError saying how to install it."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise EdgeclError("--target tflm: the TFLM interpreter is not installed; install the "
                          "optional extra with pip install 'edgecl[tflm]'") from None
    return runtime


@contextlib.contextmanager
def quiet_fds(target: int | None = None) -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null (or to the open file descriptor `target`) for
    the block: TFLM's C++ (and the converter's) print allocation failures, allocation records
    and progress there, past Python's sys.stdout/sys.stderr."""
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null if target is None else target, 1)
        os.dup2(null if target is None else target, 2)
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio buffers what it writes to a file
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _allocates(model_bytes: bytes, arena: int) -> bool:
    """Whether TFLM allocates the model in `arena` bytes. The attempt runs in a child process:
    on some arenas too small for a model, TFLM's interpreter crashes (SIGSEGV) instead of
    failing, which would take the whole export down; a crashed attempt counts as too small."""
    runtime = micro_runtime()  # imported here, not in the child

    def attempt() -> bool:
        try:
            runtime.Interpreter.from_bytes(model_bytes, arena_size=arena)
        except RuntimeError:
            return False
        return True

    return succeeds_in_child(attempt)


def succeeds_in_child(attempt: Callable[[], bool]) -> bool:
    """`attempt()` in a forked child process: True when it returned True; False when it returned
    False, raised or was killed by a signal. Runs in this process where fork is missing."""
    if not hasattr(os, "fork"):
        return attempt()
    with warnings.catch_warnings():
        # JAX (loaded by the TFLM converter) warns at every fork that a multithreaded child may
        # deadlock; this child runs only TFLM's allocator and exits, never entering JAX.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report by exit code only, never return into the caller's code
        code = 1
        try:
            code = 0 if attempt() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def find_arena(model_bytes: bytes) -> int:
    """The smallest tensor arena (a multiple of ARENA_STEP bytes) in which TFLM allocates the
    model, found by real allocations. One allocation in MAX_ARENA bytes gives the allocation
    record, whose head and tail the smallest arena holds at least (allocating can need scratch
    beyond them): the search starts at their sum and checks that the step below it fails, or
    gallops up from there and bisects; without a record, or when the step below allocates too,
    it bisects over every arena up to the first power of two that allocates (_bisect_arena)."""
    with quiet_fds():
        floor = _record_floor(model_bytes)
        if floor is None:
            return _bisect_arena(model_bytes)
        if _allocates(model_bytes, floor):
            if floor == ARENA_STEP or not _allocates(model_bytes, floor - ARENA_STEP):
                return floor
            return _bisect_arena(model_bytes)  # below the record's sum: not a floor after all
        # Short of the planner's scratch (kilobytes on a small model): gallop up in kilobytes.
        low, step = floor, GALLOP_STEP  # low fails
        while not _allocates(model_bytes, min(low + step, MAX_ARENA)):
            if low + step >= MAX_ARENA:
                return _bisect_arena(model_bytes)  # it allocated in MAX_ARENA bytes before
            low, step = low + step, step * 2
        return _bisect_between(model_bytes, low, min(low + step, MAX_ARENA))


def _record_floor(model_bytes: bytes) -> int | None:
    """The head and tail of the model's allocation record in MAX_ARENA bytes, summed and rounded
    up to ARENA_STEP; None when it does not allocate there or prints no record. The allocation
    runs in a child process, as _allocates' do."""
    split = _allocation_record(model_bytes, MAX_ARENA, in_child=True)
    if split is None:
        return None
    total = split["activations"] + split["persistent"]
    return max(ARENA_STEP, -(-total // ARENA_STEP) * ARENA_STEP)


def _bisect_arena(model_bytes: bytes) -> int:
    """find_arena by plain bisection: the first power of two times ARENA_STEP * 1024 that
    allocates, then bisection from 0 (which fails) to it."""
    high = ARENA_STEP * 1024
    while not _allocates(model_bytes, high):
        if high >= MAX_ARENA:
            raise EdgeclError(f"TFLM: the model does not allocate in {MAX_ARENA} bytes")
        high *= 2
    return _bisect_between(model_bytes, 0, high)


def _bisect_between(model_bytes: bytes, low: int, high: int) -> int:
    """The smallest multiple of ARENA_STEP in (low, high] that allocates, given that `low`
    fails and `high` allocates (multiples of ARENA_STEP)."""
    while high - low > ARENA_STEP:
        middle = (low + high) // 2 // ARENA_STEP * ARENA_STEP
        if _allocates(model_bytes, middle):
            high = middle
        else:
            low = middle
    return high


def arena_split(model_bytes: bytes, arena: int) -> dict[str, int]:
    """How TFLM divides an arena of `arena` bytes, from its allocation record: `activations`
    (the arena's head: the memory planner's buffers for the tensors between operators, reused
    once a tensor is dead; what layer order and window size can move) and `persistent` (its
    tail: per-operator data such as per-channel requantization multipliers and shifts, and the
    tensor and node structures; what the operator and channel counts set). Allocating can need
    temporary room beyond the two (the planner's own scratch), so on a small model they sum to
    less than the smallest arena that allocates."""
    split = _allocation_record(model_bytes, arena, in_child=False)
    if split is None:
        raise EdgeclError("TFLM printed no arena allocation record (head and tail)")
    return split


def _allocation_record(model_bytes: bytes, arena: int, *, in_child: bool
                       ) -> dict[str, int] | None:
    """arena_split's figures from TFLM's allocation record of the model in `arena` bytes, printed
    to a file; None when it prints none, or (`in_child`: the allocation runs in a child process)
    when it does not allocate."""
    runtime = micro_runtime()
    with tempfile.TemporaryFile() as record:
        def attempt() -> bool:
            with quiet_fds(record.fileno()):
                runtime.Interpreter.from_bytes(model_bytes, arena_size=arena).print_allocations()
            return True

        if in_child and not succeeds_in_child(attempt):
            return None
        if not in_child:
            attempt()
        record.seek(0)
        text = record.read().decode(errors="replace")
    head = re.search(r"Arena allocation head (\d+) bytes", text)
    tail = re.search(r"Arena allocation tail (\d+) bytes", text)
    if head is None or tail is None:
        return None
    return {"activations": int(head.group(1)), "persistent": int(tail.group(1))}


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int


class MicroModel:
    """One TFLM interpreter over an integer model: log-mel [1, 1, n_mels, frames] in as int8
    codes (int16, zero point 0, for a build in 16-bit activations throughout), logits
    [1, classes] out as int8 or int16 codes."""

    def __init__(self, model_bytes: bytes, arena_bytes: int) -> None:
        runtime = micro_runtime()
        try:
            with quiet_fds():
                self._interpreter = runtime.Interpreter.from_bytes(model_bytes,
                                                                   arena_size=int(arena_bytes))
        except (RuntimeError, ValueError) as error:
            raise EdgeclError(f"TFLM could not load the model in a {arena_bytes}-byte arena "
                              f"({error})") from None
        details_in = self._interpreter.get_input_details(0)
        details_out = self._interpreter.get_output_details(0)
        if details_in["dtype"] not in (np.int8, np.int16):
            raise EdgeclError(f"TFLM model: expected an int8 or int16 input, got "
                              f"{details_in['dtype']}")
        if details_out["dtype"] not in (np.int8, np.int16):
            raise EdgeclError(f"TFLM model: expected int8 or int16 logits, got "
                              f"{details_out['dtype']}")
        self.input_shape = tuple(int(d) for d in details_in["shape"])
        self.input_dtype: type[np.integer] = details_in["dtype"]
        self.input = _quantization(details_in)
        self.output = _quantization(details_out)

    def run_codes(self, codes: np.ndarray) -> np.ndarray:
        """Input codes (int8, or int16 for a 16-bit input) -> output codes [classes]."""
        self._interpreter.set_input(
            np.asarray(codes, dtype=self.input_dtype).reshape(self.input_shape), 0)
        self._interpreter.invoke()
        return np.asarray(self._interpreter.get_output(0)).reshape(-1)

    def run_logmel(self, features: np.ndarray) -> np.ndarray:
        """float log-mel [n_mels, frames] -> float logits [classes] (dequantized)."""
        codes = self.run_codes(quantize(features, self.input.scale, self.input.zero_point,
                                        self.input_dtype))
        return ((codes.astype(np.float32) - self.output.zero_point)
                * np.float32(self.output.scale))


class HeadedMicroModel:
    """A TFLM embedding model with a float head: logits = dequantized embedding @ weight + bias
    (float32, as the C head computes them); runs wherever a MicroModel does."""

    def __init__(self, model: MicroModel, weight: np.ndarray, bias: np.ndarray) -> None:
        self.model = model
        self.weight = np.asarray(weight, np.float32)
        self.bias = np.asarray(bias, np.float32).reshape(-1)

    def run_logmel(self, features: np.ndarray) -> np.ndarray:
        """float log-mel [n_mels, frames] -> float logits [classes]."""
        logits: np.ndarray = self.model.run_logmel(features) @ self.weight + self.bias
        return logits


def clip_logits(model: MicroModel | HeadedMicroModel, plan: LogMelPlan,
                clip: np.ndarray,
                front_end: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """One clip -> its scores [classes]: the front end and the model on each window of
    plan.clip_samples samples (split_windows), the dequantized logits averaged (pool).
    `front_end(window)` gives a window's log-mel (default: logmel with `plan`; an exporter
    passes one that keeps them)."""
    features = front_end or (lambda window: logmel(plan, window))
    return pool(np.stack([model.run_logmel(features(window))
                          for window in split_windows(clip, plan.clip_samples)]))


def _quantization(details: dict[str, Any]) -> Quantization:
    q = details["quantization_parameters"]
    return Quantization(float(q["scales"][0]), int(q["zero_points"][0]))


@dataclass
class TflmBundle:
    """A bundle's TFLM model with its front end: `logits(waveforms)` like runtime.LoadedModel.
    `plan` is the front end of one window (plan.clip_samples = the window's samples)."""

    path: Path
    model: MicroModel | HeadedMicroModel
    plan: LogMelPlan
    labels: list[str]
    sample_rate: int
    clip_samples: int
    manifest: dict[str, Any] | None = field(default=None, repr=False)

    def logits(self, waveforms: np.ndarray) -> np.ndarray:
        """waveforms [B, clip_samples] -> scores [B, classes], one clip at a time, pooled over
        each clip's windows (clip_logits)."""
        batch = np.asarray(waveforms, dtype=np.float32).reshape(-1, self.clip_samples)
        return np.stack([clip_logits(self.model, self.plan, clip) for clip in batch])


def load_tflm_bundle(folder: str | os.PathLike[str]) -> TflmBundle:
    """A bundle folder's TFLM model, after checking every file against the manifest's sha256."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeclError(f"{folder}: --target tflm needs a bundle folder (WORKSPACE/RUN/"
                          f"phase_<i>)")
    refuse_withheld(folder)
    if not (folder / MANIFEST).is_file():
        raise EdgeclError(f"{folder}: not a bundle (no {MANIFEST})")
    manifest = verify_bundle(folder)
    section = manifest.get("tflm")
    if not isinstance(section, dict):
        raise EdgeclError(f"{folder}: this bundle has no TFLM build; export it with "
                          f"--target tflm")
    name = str(section.get("file", MODEL_TFLM))  # a learnt version's: the embedding model
    if section.get("status") != "shipped" or name not in manifest["files"]:
        raise EdgeclError(f"{folder}: the TFLM build was withheld ({section.get('reason')}); "
                          f"the fp32 ONNX model still ships")
    labels = manifest.get("classes")
    from firmware_export.device.runtime import _read_labels

    if _read_labels(folder / LABELS) != labels:
        raise EdgeclError(f"{folder / MANIFEST}: classes do not match {LABELS}; re-export it")
    clip_samples = int(manifest["clip_samples"])
    # Bundles from before windowing have no "window": the model takes the whole clip.
    window = int(section.get("window", {}).get("samples", clip_samples))
    plan = LogMelPlan.from_config(manifest["frontend"], window)
    micro = MicroModel((folder / name).read_bytes(), int(section["arena_bytes"]))
    expected = (1, 1, plan.n_mels, plan.n_frames)
    if micro.input_shape != expected:
        raise EdgeclError(f"{folder / name}: input shape {micro.input_shape} does not "
                          f"match the front end's {expected}")
    model = micro if "learnt_head" not in section else _with_learnt_head(folder, manifest, micro)
    return TflmBundle(path=folder / name, model=model, plan=plan, labels=labels,
                      sample_rate=int(manifest["sample_rate"]), clip_samples=clip_samples,
                      manifest=manifest)


def _with_learnt_head(folder: Path, manifest: dict[str, Any], micro: MicroModel
                      ) -> HeadedMicroModel:
    """A learnt version's TFLM embedding model with its analytic head (from the verified state,
    standardisation folded in: what rls.c's edgecl_rls_predict computes, to float rounding)."""
    from firmware_export.device.analytic_state import read_state

    return HeadedMicroModel(micro, *read_state(folder, manifest).head.folded())
