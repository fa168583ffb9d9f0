"""What each exported phase of a run costs on a CPU, batch 1, one thread (`edgecl bench export`).

Per phase: the export verdicts from the manifest (held-out clips, fp32 max logit difference,
int8 shipped or withheld, its top-1 agreement and accuracy drop, the float share of the backbone's
MACs), fp32 and int8 file sizes and their ratio, MACs and parameters per clip, the median latency
per clip for PyTorch eager, ONNX Runtime fp32 and int8, and the
front end's share of the ONNX Runtime time (the front-end subgraph, waveform to log-mel, cut out of
model.onnx and timed alone). Then the front end itself: the torch.stft one (ONNX STFT op), the
conv DFT and the factored DFT, alone and inside the full fp32 model.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.device import torch_threads
from edgecl.errors import EdgeclError
from firmware_export.device.layout import INPUT_NAME, MANIFEST, MODEL_FP32, MODEL_INT8
from firmware_export.device.manifest import read_manifest
from firmware_export.device.runtime import cpu_session

ROW_COLUMNS = ("phase", "classes", "clips", "fp32_max_diff", "int8", "int8_agreement",
               "int8_drop_points", "float_share", "fp32_kib", "int8_kib", "int8_ratio", "mmacs",
               "torch_ms", "ort_fp32_ms", "ort_int8_ms", "int8_vs_fp32_latency",
               "frontend_share_fp32")
FRONTEND_COLUMNS = ("frontend", "frontend_ms", "ort_fp32_ms", "frontend_share",
                    "max_abs_logit_diff")


def median_seconds(call: Callable[[], Any], runs: int, warmup: int) -> float:
    """Median wall time of `call()` over `runs` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def front_end_graph(model_bytes: bytes) -> bytes:
    """The subgraph from the waveform input to the first Log output (the log-mel front end)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load_from_string(model_bytes)
    log = next((n for n in model.graph.node if n.op_type == "Log"), None)
    if log is None:
        raise EdgeclError("bench export: the model has no Log node; cannot time its front end")
    inferred = onnx.shape_inference.infer_shapes(model)
    return Extractor(inferred).extract_model([INPUT_NAME], [log.output[0]]).SerializeToString()


def ort_ms(session, clip: np.ndarray, runs: int, warmup: int) -> float:
    feed = {session.get_inputs()[0].name: clip}
    return 1000 * median_seconds(lambda: session.run(None, feed), runs, warmup)


def torch_ms(model, clip: np.ndarray, runs: int, warmup: int) -> float:
    import torch

    tensor = torch.from_numpy(clip)

    def call():
        with torch.inference_mode():
            model(tensor)
    return 1000 * median_seconds(call, runs, warmup)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def parity_columns(manifest: dict[str, Any]) -> dict[str, Any]:
    """The export verdicts of one bundle at its largest parity batch, from its manifest."""
    fp32, int8 = manifest["artifacts"]["fp32"], manifest["artifacts"]["int8"]
    batch = max(int8["parity_vs_fp32"], key=lambda name: int(name.split("_")[1]))
    int8_figures = int8["parity_vs_fp32"][batch]
    search = int8["quantization"]["search"]
    return {
        "clips": manifest["parity"]["holdout_clips"],
        "fp32_max_diff": float(f"{fp32['parity_vs_torch'][batch]['max_abs_logit_diff']:.2g}"),
        "int8": int8["status"],
        "int8_agreement": round(int8_figures["top1_agreement"], 4),
        "int8_drop_points": int8_figures["accuracy_drop_points"],
        "float_share": search["float_share_of_backbone_macs"],
        "int8_candidates": search["candidates_tried"],
        "int8_recipe": search["recipe"],
    }


def bench_phase(folder: Path, clip: np.ndarray, runs: int, warmup: int,
                threads: int = 1) -> tuple[dict, Any]:
    """One row of the table for `folder`, and the PyTorch model (None without a checkpoint)."""
    from edgecl.run_folder import CHECKPOINT_NAME, load_checkpoint
    from firmware_export.device.manifest import verify_bundle

    manifest = verify_bundle(folder)
    fp32_bytes = (folder / MODEL_FP32).read_bytes()
    int8_shipped = MODEL_INT8 in manifest["files"]
    int8_bytes = (folder / MODEL_INT8).read_bytes() if int8_shipped else None
    front_ms = ort_ms(cpu_session(front_end_graph(fp32_bytes), threads), clip, runs, warmup)
    fp32_ms = ort_ms(cpu_session(fp32_bytes, threads), clip, runs, warmup)
    int8_ms = (ort_ms(cpu_session(int8_bytes, threads), clip, runs, warmup) if int8_shipped
               else None)
    model = None
    eager_ms = None
    if (folder / CHECKPOINT_NAME).is_file():
        model, _, _ = load_checkpoint(folder / CHECKPOINT_NAME)
        eager_ms = torch_ms(model, clip, runs, warmup)
    row = {
        "phase": manifest["phase"], "classes": manifest["n_classes"],
        "fp32_kib": round(len(fp32_bytes) / 1024, 1),
        "int8_kib": round(len(int8_bytes) / 1024, 1) if int8_shipped else None,
        "int8_ratio": round(len(int8_bytes) / len(fp32_bytes), 3) if int8_shipped else None,
        "mmacs": round(manifest["model"]["macs_per_clip"] / 1e6, 2),
        "params": manifest["model"]["parameters"],
        "torch_ms": _ms(eager_ms), "ort_fp32_ms": _ms(fp32_ms), "ort_int8_ms": _ms(int8_ms),
        "frontend_ms": _ms(front_ms), "frontend_share_fp32": round(front_ms / fp32_ms, 3),
        "frontend_share_int8": round(front_ms / int8_ms, 3) if int8_shipped else None,
        "int8_vs_fp32_latency": round(int8_ms / fp32_ms, 3) if int8_shipped else None,
        **parity_columns(manifest),
    }
    return row, model


def compare_front_ends(model, clip: np.ndarray, runs: int, warmup: int,
                       threads: int = 1) -> list[dict]:
    """fp32 ONNX latency with the torch.stft front end, the conv DFT and (where the hop allows it)
    the factored DFT, same weights."""
    import torch

    from firmware_export.export import export_onnx, serialize
    from models.factored_dft import factorization
    from models.frontend import LogMelFrontEnd

    rows, reference = [], None
    config = model.frontend.config
    variants = [("torch", "torch.stft (ONNX STFT)"), ("conv", "conv DFT (Conv+MatMul)")]
    if factorization(config.n_fft, config.hop_length, config.n_freqs) is not None:
        variants.append(("factored", "factored DFT (2 grouped Conv)"))
    for impl, label in variants:
        variant = copy.deepcopy(model)
        variant.frontend = LogMelFrontEnd(config, stft_impl=impl)  # buffers only: no weights lost
        proto = export_onnx(variant.eval(), labels=[str(i) for i in range(model.head.n_classes)],
                            sample_rate=config.sample_rate, clip_samples=clip.shape[1])
        model_bytes = serialize(proto)
        session = cpu_session(model_bytes, threads)
        logits = session.run(None, {INPUT_NAME: clip})[0]
        with torch.no_grad():
            reference = model(torch.from_numpy(clip))[0].numpy() if reference is None else reference
        front_ms = ort_ms(cpu_session(front_end_graph(model_bytes), threads), clip, runs,
                          warmup)
        full_ms = ort_ms(session, clip, runs, warmup)
        rows.append({"frontend": label, "frontend_ms": _ms(front_ms), "ort_fp32_ms": _ms(full_ms),
                     "frontend_share": round(front_ms / full_ms, 3),
                     "max_abs_logit_diff": float(np.max(np.abs(logits - reference)))})
    return rows


def bench_export(run_dir: str | Path, *, phase: int | None = None, runs: int = 200,
                 threads: int = 1,
                 warmup: int = 20, compare_stft: bool = True) -> dict[str, Any]:
    """{"phases": rows, "frontends": rows} for the bundles under `run_dir` (see module doc)."""
    run_dir = Path(run_dir)
    # phase_<i> only: a bundle version the device learnt (phase_<i>.v<N>) has no trained head.
    folders = sorted((p.parent for p in run_dir.glob(f"phase_*/{MANIFEST}")
                      if p.parent.name.split("_", 1)[1].isdigit()),
                     key=lambda p: int(p.name.split("_")[1]))
    if phase is not None:
        folders = [p for p in folders if p.name == f"phase_{phase}"]
    if not folders:
        raise EdgeclError(f"{run_dir}: no phase_<i>/{MANIFEST} bundle"
                          + (f" for --phase {phase}" if phase is not None else "")
                          + "; run `edgecl train` (with export) or `edgecl export` first")
    with torch_threads(threads):
        rows, model = [], None
        for folder in folders:
            manifest = read_manifest(folder)
            if not isinstance(manifest.get("clip_samples"), int) or manifest["clip_samples"] < 1:
                raise EdgeclError(f"{folder / MANIFEST}: expected a positive integer "
                                  f"'clip_samples'; re-export the bundle")
            clip = (np.random.default_rng(0).standard_normal((1, manifest["clip_samples"]))
                    * 0.1).astype(np.float32)
            row, phase_model = bench_phase(folder, clip, runs, warmup, threads)
            rows.append(row)
            model = phase_model or model
        frontends = (compare_front_ends(model, clip, runs, warmup, threads)
                     if compare_stft and model else [])
    return {"phases": rows, "frontends": frontends, "runs": runs, "warmup": warmup,
            "threads": threads, "batch": 1}
