"""`edgecl bench frontend`: the log-mel front end alone, per STFT implementation, sample rate and
clip length, exported to ONNX as the models are (firmware_export.export.export_onnx) and timed in
ONNX Runtime at batch 1. The implementations of one rate and clip length are timed in
interleaved rounds (interleaved_ms), so their ratios hold on a shared machine. Optionally also
in PyTorch eager at a batch size (how the trainer computes features), one thread.

Per implementation: what its graph computes with (ONNX op types), MACs per clip and per second of
audio, the graph's size, the median ms per clip at each thread count and its ratio to the conv
DFT's in the same run, and the max |difference| of ONNX Runtime's log-mel from a float64
torch.stft reference on a seeded noise clip (std 0.1, so no bin is near-silent). MACs of the conv
and factored DFTs and of the mel MatMul are counted (models.profile); an FFT (the ONNX STFT and
DFT ops) is estimated as 2 n_fft log2(n_fft) real multiply-adds per frame (a radix-2 complex FFT),
plus the mel MatMul. Per rate, the backbone's MACs per second of audio (BC-ResNet at --width),
which the DCASE complexity limit counts without the front end.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgecl.device import torch_threads
from edgecl.errors import EdgeclError

IMPLS = ("conv", "factored", "torch", "rfft")
DESCRIPTIONS = {"conv": "direct DFT as one Conv", "factored": "2-stage Cooley-Tukey, grouped Convs",
                "torch": "torch.stft", "rfft": "unfold + torch.fft.rfft"}
# Op types that carry a front end's work (the rest reshape, pad, square and log).
WORK_OPS = ("Conv", "MatMul", "STFT", "DFT", "Gather", "GatherND", "Transpose")
COLUMNS = ("sample_rate", "clip_seconds", "impl", "onnx_ops", "mmacs_per_second", "fft_estimated",
           "kib", "max_abs_diff")
MODEL_COLUMNS = ("sample_rate", "clip_seconds", "default_impl", "frontend_mmacs_per_second",
                 "backbone_mmacs_per_second")


def test_clip(n_samples: int) -> np.ndarray:
    """[1, n_samples] float32 seeded noise, std 0.1."""
    return (np.random.default_rng(0).standard_normal((1, n_samples)) * 0.1).astype(np.float32)


def fft_macs_estimate(config, frames: int) -> int:
    """Real multiply-adds of a radix-2 complex FFT of n_fft points for every frame."""
    return int(frames * 2 * config.n_fft * math.log2(config.n_fft))


def front_end_macs(front_end, n_samples: int) -> tuple[int, bool]:
    """(MACs per clip, whether an FFT estimate is part of it) for a LogMelFrontEnd."""
    from models.profile import module_macs

    config = front_end.config
    counted = module_macs(front_end, n_samples)
    if config.stft_impl in ("conv", "factored"):
        return counted, False
    frames = config.n_frames(n_samples)
    mel = frames * config.n_freqs * config.n_mels if config.stft_impl == "torch" else 0
    return counted + mel + fft_macs_estimate(config, frames), True


def reference_logmel(config, clip: np.ndarray) -> np.ndarray:
    """The float64 torch.stft log-mel of `clip` [1, T]: [1, 1, n_mels, frames]."""
    import torch

    from models.frontend import LogMelFrontEnd

    front_end = LogMelFrontEnd(config, stft_impl="torch").double().eval()
    with torch.no_grad():
        return front_end(torch.from_numpy(clip).double()).numpy()


def work_ops(proto) -> str:
    """The op types of `proto` that carry the work, comma-separated, in WORK_OPS order."""
    present = {node.op_type for node in proto.graph.node}
    return ",".join(op for op in WORK_OPS if op in present)


def exported_row(config, impl: str, clip: np.ndarray, reference: np.ndarray
                 ) -> tuple[dict[str, Any], bytes]:
    """Export the front end with `impl`: (its row without timings, the model bytes); the row's
    max_abs_diff is ONNX Runtime's log-mel (one thread) against `reference`."""
    from dataclasses import replace

    from firmware_export.device.layout import INPUT_NAME
    from firmware_export.device.runtime import cpu_session
    from firmware_export.export import export_onnx, serialize
    from models.frontend import LogMelFrontEnd

    front_end = LogMelFrontEnd(replace(config, stft_impl=impl)).eval()
    n_samples = clip.shape[1]
    proto = export_onnx(front_end, labels=[], sample_rate=config.sample_rate,
                        clip_samples=n_samples)
    model_bytes = serialize(proto)
    macs, estimated = front_end_macs(front_end, n_samples)
    seconds = n_samples / config.sample_rate
    logmel = cpu_session(model_bytes, 1).run(None, {INPUT_NAME: clip})[0]
    return {"sample_rate": config.sample_rate, "clip_seconds": round(seconds, 3), "impl": impl,
            "onnx_ops": work_ops(proto), "mmacs": round(macs / 1e6, 3),
            "mmacs_per_second": round(macs / seconds / 1e6, 2), "fft_estimated": estimated,
            "kib": round(len(model_bytes) / 1024, 1),
            "max_abs_diff": float(np.max(np.abs(logmel.astype(np.float64) - reference)))
            }, model_bytes


def interleaved_ms(calls: dict[str, Callable[[], Any]], runs: int, warmup: int
                   ) -> dict[str, float]:
    """Median ms of each call, timed in rounds that make every call once, so a change in the
    machine's load falls on all of them alike (the ratios are what count)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(warmup + runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def eager_calls(config, impls: Sequence[str], clip: np.ndarray, batch: int
                ) -> dict[str, Callable[[], Any]]:
    """PyTorch eager forward passes of each implementation on `batch` copies of `clip`."""
    from dataclasses import replace

    import torch

    from models.frontend import LogMelFrontEnd

    waves = torch.from_numpy(np.repeat(clip, batch, axis=0))

    def call(front_end):
        def run():
            with torch.no_grad():
                front_end(waves)
        return run
    return {impl: call(LogMelFrontEnd(replace(config, stft_impl=impl)).eval()) for impl in impls}


def bench_group(config, impls: Sequence[str], n_samples: int, threads: Sequence[int],
                runs: int, warmup: int, eager_batch: int = 0) -> list[dict[str, Any]]:
    """The rows of every implementation at one rate and clip length, timed interleaved; with
    `eager_batch`, also PyTorch eager on one thread at that batch size (ms per clip)."""
    from firmware_export.device.layout import INPUT_NAME
    from firmware_export.device.runtime import cpu_session

    clip = test_clip(n_samples)
    reference = reference_logmel(config, clip)
    exported = {impl: exported_row(config, impl, clip, reference) for impl in impls}
    rows = {impl: row for impl, (row, _) in exported.items()}
    columns = {f"ms_{count}t": f"{count}t_vs_conv" for count in threads}  # ms -> ratio
    for count in threads:
        sessions = {impl: cpu_session(model_bytes, count)
                    for impl, (_, model_bytes) in exported.items()}
        calls = {impl: (lambda s=session: s.run(None, {INPUT_NAME: clip}))
                 for impl, session in sessions.items()}
        for impl, ms in interleaved_ms(calls, runs, warmup).items():
            rows[impl][f"ms_{count}t"] = round(ms, 3)
    if eager_batch:
        columns["eager_ms"] = "eager_vs_conv"
        calls = eager_calls(config, impls, clip, eager_batch)
        for impl, ms in interleaved_ms(calls, max(1, runs // 5), min(warmup, 1)).items():
            rows[impl]["eager_ms"] = round(ms / eager_batch, 3)
    conv = rows.get("conv")
    for row in rows.values():
        for column, ratio in columns.items():
            row[ratio] = round(row[column] / conv[column], 3) if conv else None
    return list(rows.values())


def backbone_row(config, n_samples: int, width: int) -> dict[str, Any]:
    """The default front end's and BC-ResNet's backbone MACs per second of audio at one rate."""
    from models import build_model
    from models.profile import macs_breakdown

    macs = macs_breakdown(build_model("bc-resnet", 10, config, width=width), n_samples)
    seconds = n_samples / config.sample_rate
    return {"sample_rate": config.sample_rate, "clip_seconds": round(seconds, 3),
            "default_impl": config.stft_impl,
            "frontend_mmacs_per_second": round(macs["frontend"] / seconds / 1e6, 2),
            "backbone_mmacs_per_second": round(macs["backbone"] / seconds / 1e6, 2)}


def check_clip_lengths(sample_rates: Sequence[int], clip_seconds: Sequence[float]) -> None:
    """EdgeclError naming --clip-seconds when a clip is too short for a rate's reflect padding."""
    from models.frontend import FrontEndConfig

    for rate in sample_rates:
        n_fft = FrontEndConfig.for_sample_rate(rate).n_fft
        for seconds in clip_seconds:
            if round(seconds * rate) <= n_fft // 2:
                raise EdgeclError(f"--clip-seconds: {seconds:g} s at {rate} Hz is "
                                  f"{round(seconds * rate)} samples; the front end needs more "
                                  f"than n_fft/2 = {n_fft // 2}")


def bench_frontend(sample_rates: Sequence[int], clip_seconds: Sequence[float],
                   impls: Sequence[str] = IMPLS, threads: Sequence[int] = (1, 2),
                   runs: int = 50, warmup: int = 5, width: int = 40,
                   eager_batch: int = 0) -> dict[str, Any]:
    """{"rows": one per rate, clip length and implementation, "models": one per rate and clip
    length} (see the module doc). Each row's `<n>t_vs_conv` is its ms over conv's at the same
    rate, clip length and thread count, timed in the same rounds (None without conv)."""
    from models.frontend import FrontEndConfig

    unknown = [impl for impl in impls if impl not in IMPLS]
    if not impls or unknown:
        raise EdgeclError(f"--impls: expected comma-separated names from {', '.join(IMPLS)}, got "
                          f"{', '.join(impls) or 'none'}")
    check_clip_lengths(sample_rates, clip_seconds)
    with torch_threads(1):
        rows, models = [], []
        for rate in sample_rates:
            config = FrontEndConfig.for_sample_rate(rate)
            for seconds in clip_seconds:
                n_samples = round(seconds * rate)
                rows.extend(bench_group(config, impls, n_samples, threads, runs, warmup,
                                        eager_batch))
                models.append(backbone_row(config, n_samples, width))
    return {"rows": rows, "models": models, "threads": list(threads), "runs": runs,
            "warmup": warmup, "batch": 1, "width": width, "eager_batch": eager_batch}


def table_columns(threads: Sequence[int], eager: bool = False) -> tuple[str, ...]:
    """COLUMNS with each thread count's ms and ratio to conv (and PyTorch eager's)."""
    timing = tuple(name for count in threads for name in (f"ms_{count}t", f"{count}t_vs_conv"))
    if eager:
        timing += ("eager_ms", "eager_vs_conv")
    return COLUMNS[:-1] + timing + COLUMNS[-1:]
