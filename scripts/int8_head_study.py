"""Where a trained run's int8 builds lose top-1 agreement with fp32, and what each head lever does.

For each phase of RUN (its checkpoint, with the export's own calibration and held-out clips) it
builds int8 variants and compares each with the fp32 model on the held-out clips, under the int8
rule of firmware_export.parity:

  ONNX (batch 32, fp32 ONNX as reference):
    base            the export's first recipe (per-channel, MinMax, uint8 activations)
    head-float      swap test: backbone int8, head (Gemm after the pooling) in float
    backbone-float  swap test: backbone float, head int8 (its input and logits quantized)
    logits-float    all int8, the head's int32 accumulators dequantized to float logits
    head-int16      the head's input and logits in 16-bit QDQ, int8 weights (16x8)
  TFLM (1 s windows pooled per clip, against the fp32 network on the same windows):
    base            the export's build (static int8, global min/max)
    head-16x8       FULLY_CONNECTED in 16-bit activations, int8 weights
    logits-pNN      the logits' calibrated range clipped below at their NN-th percentile

Each record has the figures, the logits' int8 step, and the fp32 top-2 margins of all clips
against those of the clips whose top-1 changed (the evidence for a margin-aware agreement rule).

    python scripts/int8_head_study.py RUN_DIR [--phases 1,2] [--onnx] [--tflm] > study.jsonl
    python scripts/int8_head_study.py --table study.jsonl ...     # the markdown table
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models  # noqa: F401  (before onnxruntime.quantization: see firmware_export.quantize)
from edgecl.audio import load_audio
from edgecl.run_folder import CHECKPOINT_NAME, load_checkpoint, phase_dirs, run_plan
from firmware_export import parity
from firmware_export.device.runtime import cpu_session
from firmware_export.export import export_onnx, serialize
from firmware_export.int8_search import head_nodes, layer_report, output_step
from firmware_export.quantize import QuantRecipe, prepare_graph, quantize_candidate
from firmware_export.run_export import seen_clips

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def phase_inputs(run_dir: Path, folder: Path):
    config, split, plan = run_plan(run_dir)
    model, classes, phase = load_checkpoint(folder / CHECKPOINT_NAME)
    seen = [task for task in plan.tasks if set(task.classes) <= set(classes)]
    clips = seen_clips(seen, lambda clip: load_audio(clip.path, split.sample_rate,
                                                     split.clip_samples), phase)
    return model, classes, phase, clips


def margins(logits: np.ndarray) -> np.ndarray:
    ranked = np.sort(logits, axis=1)
    return ranked[:, -1] - ranked[:, -2]


def record(reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray,
           step: float | None) -> dict[str, Any]:
    figures = parity.compare(reference, candidate, targets)
    changed = reference.argmax(axis=1) != candidate.argmax(axis=1)
    margin = margins(reference)
    out: dict[str, Any] = {k: (round(v, 4) if isinstance(v, float) else v)
                           for k, v in figures.items()}
    out["ships"] = not parity.int8_failures({"batch": figures})
    out["int8_step"] = step
    out["margin_quantiles_all"] = [round(float(q), 3) for q in np.quantile(margin, QUANTILES)]
    out["margins_of_changed"] = sorted(round(float(m), 3) for m in margin[changed])
    if step:
        out["share_of_clips_with_margin_under_step"] = round(float(np.mean(margin < step)), 4)
        decisive = margin > step
        out["agreement_on_margin_over_step"] = round(
            float(np.mean(~changed[decisive])) if decisive.any() else 1.0, 4)
        out["clips_margin_over_step"] = int(decisive.sum())
    return out


def onnx_study(model, classes, clips, extra: set[str]) -> dict[str, Any]:
    holdout, targets = clips["holdout_waveforms"], np.asarray(clips["holdout_targets"])
    calibration = clips["calibration_waveforms"]
    fp32 = export_onnx(model, labels=classes, sample_rate=int(model.frontend.config.sample_rate),
                       clip_samples=holdout.shape[1])
    run = parity.ort_runner(cpu_session(serialize(fp32)))
    reference = parity.batched(run, holdout, parity.LARGE_BATCH)
    graph = prepare_graph(fp32)
    head = head_nodes(graph.source)
    front = set(graph.always_float)
    backbone = [n.name for n in graph.source.graph.node if n.name not in head
                and n.name not in front]
    gemm = [n for n in graph.source.graph.node if n.name in head][0]
    embedding, logits_name = gemm.input[0], gemm.output[0]
    int16 = {name: [{"quant_type": _qint16()}] for name in (embedding, logits_name)}
    variants = {
        "base": ({}, ()),
        "head-float": ({}, tuple(head)),
        "backbone-float": ({}, tuple(backbone)),
        "logits-float": ({"OpTypesToExcludeOutputQuantization": [gemm.op_type]}, ()),
        "head-int16": ({"TensorQuantOverrides": int16}, ()),
    }
    if "all-int16" in extra:
        variants["all-int16"] = ({}, ())
    if "only-all-int16" in extra:
        variants = {"all-int16": ({}, ())}
    out: dict[str, Any] = {"fp32_logits_range": [round(float(reference.min()), 3),
                                                  round(float(reference.max()), 3)]}
    with tempfile.TemporaryDirectory(prefix="int8-study-") as cache:
        for name, (options, floated) in variants.items():
            recipe = QuantRecipe(float_nodes=floated,
                                 activations="int16" if name == "all-int16" else "uint8")
            candidate = quantize_candidate(graph, calibration, cache_dir=cache, recipe=recipe,
                                           extra_options=options).proto
            logits = parity.batched(parity.ort_runner(cpu_session(serialize(candidate))),
                                    holdout, parity.LARGE_BATCH)
            out[name] = record(reference, logits, targets, output_step(candidate))
            if name == "base" and "layers" in extra:
                report = layer_report(graph.source, candidate, calibration, reference)
                out[name]["head_share_of_noise"] = report["head_share_of_noise"]
                out[name]["noisiest_layers"] = report["layers_noisiest_first"][:6]
            print(f"  onnx {name}: agreement {out[name]['top1_agreement']}, "
                  f"ships {out[name]['ships']}", file=sys.stderr, flush=True)
    return out


def _qint16():
    from onnxruntime.quantization import QuantType

    return QuantType.QInt16


def tflm_study(model, clips, percentiles: tuple[float, ...], extra: set[str]) -> dict[str, Any]:
    from firmware_export.device.logmel import LogMelPlan, logmel
    from firmware_export.device.tflm_runtime import find_arena
    from firmware_export.device.windows import pool, split_windows, window_samples
    from firmware_export.tflm import flatbuffer
    from firmware_export.tflm.build import all_windows, windowed_fp32
    from firmware_export.tflm.convert import float_tflite
    from firmware_export.tflm.quantize import int8_tflite
    from firmware_export.tflm.rewrite import tflm_graph

    holdout, targets = clips["holdout_waveforms"], np.asarray(clips["holdout_targets"])
    config = model.frontend.config.to_dict()
    rate = int(model.frontend.config.sample_rate)
    window = window_samples(holdout.shape[1], rate, None, min_samples=int(config["n_fft"]))
    plan = LogMelPlan.from_config(config, window)
    calibration = np.stack([logmel(plan, w) for w in
                            all_windows(clips["calibration_waveforms"], window)])[:, None]
    per_clip = len(split_windows(holdout[0], window))
    features = np.stack([logmel(plan, w) for w in all_windows(holdout, window)])
    reference = windowed_fp32(model, holdout, window)
    float_model = float_tflite(tflm_graph(model), torch.from_numpy(calibration[:1]))
    window_logits = parity.batched(parity.torch_runner(tflm_graph(model)),
                                   features[:, None], parity.LARGE_BATCH)
    variants: dict[str, dict[str, Any]] = {"base": {}, "head-16x8": {"sixteen_bit": "head"}}
    for pct in percentiles:
        variants[f"logits-p{pct:g}"] = {"edit_ranges": _clip_logits_below(
            float_model, float(np.percentile(window_logits, pct)))}
    out: dict[str, Any] = {"windows_per_clip": per_clip}
    for name, options in variants.items():
        model_bytes = int8_tflite(float_model, calibration, **options)
        if options.get("sixteen_bit", "none") != "none":
            model_bytes = flatbuffer.drop_output_requantize(model_bytes)
        model_bytes = flatbuffer.finish(model_bytes)
        micro = _micro(model_bytes, find_arena(model_bytes))
        device = np.stack([pool(part) for part in np.stack(
            [micro.run_logmel(f) for f in features]).reshape(len(holdout), per_clip, -1)])
        out[name] = record(reference, device.astype(np.float64), targets, micro.output.scale)
        out[name]["float_ops"] = len(flatbuffer.float_operators(model_bytes))
        out[name]["ops"] = sorted(set(flatbuffer.operators(model_bytes)))
        print(f"  tflm {name}: agreement {out[name]['top1_agreement']}, "
              f"ships {out[name]['ships']}", file=sys.stderr, flush=True)
    return out


def _micro(model_bytes: bytes, arena: int):
    from firmware_export.device.tflm_runtime import MicroModel

    return MicroModel(model_bytes, arena)


def _clip_logits_below(float_model: bytes, floor: float):
    from ai_edge_litert import interpreter as litert

    interpreter = litert.Interpreter(model_content=float_model)
    output = interpreter.get_output_details()[0]["name"]

    def edit(qsvs: dict) -> dict:
        matches = [key for key in qsvs if key == output] or [key for key in qsvs
                                                              if output in key]
        for key in matches:
            qsvs[key] = dict(qsvs[key], min=np.maximum(qsvs[key]["min"], floor))
        return qsvs
    return edit


def table(paths: list[Path]) -> str:
    """Markdown rows (phase, artifact, variant: agreement, changed clips, accuracy fp32 -> int8,
    verdict, logits step, median fp32 margin of all clips and of the changed ones) from the
    JSON lines this script printed."""
    rows = ["| phase | build | variant | agreement | changed | accuracy fp32 -> int8 | verdict "
            "| logits step | median margin: all / changed | agreement where margin > step |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in paths:
        text = path.read_text()
        try:
            documents = [json.loads(text)]
        except json.JSONDecodeError:
            documents = [json.loads(line) for line in text.splitlines() if line.strip()]
        for document in documents:
            for phase, entry in document.items():
                for build in ("onnx", "tflm"):
                    for name, f in entry.get(build, {}).items():
                        if isinstance(f, dict):
                            rows.append(_row(phase.split("_")[1], build, name, f))
    return "\n".join(rows)


def _row(phase: str, build: str, name: str, f: dict[str, Any]) -> str:
    changed = f["margins_of_changed"]
    step = f["int8_step"]
    over = "-" if step is None else f"{100 * f['agreement_on_margin_over_step']:.1f}%"
    return (f"| {phase} | {build} | {name} | {100 * f['top1_agreement']:.1f}% "
            f"| {f['top1_disagreements']} of {f['clips']} | {f['accuracy_reference']:.1f}% -> "
            f"{f['accuracy']:.1f}% | {'ships' if f['ships'] else 'misses'} "
            f"| {'float' if step is None else f'{step:.3g}'} "
            f"| {f['margin_quantiles_all'][2]:.3f} / "
            f"{np.median(changed) if changed else float('nan'):.3f} "
            f"| {over} |")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--table"]:
        print(table([Path(p) for p in argv[1:]]))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--phases", default=None)
    parser.add_argument("--onnx", action="store_true")
    parser.add_argument("--tflm", action="store_true")
    parser.add_argument("--percentiles", default="1,10")
    parser.add_argument("--extra", default="", help="all-int16: every activation in 16 bits (ONNX), only-all-int16: that "
                        "alone; layers: per-layer SQNR of the base")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    extra = set(filter(None, args.extra.split(",")))
    wanted = None if args.phases is None else {int(p) for p in args.phases.split(",")}
    for folder in phase_dirs(args.run_dir):
        model, classes, phase, clips = phase_inputs(args.run_dir, folder)
        if wanted is not None and phase not in wanted:
            continue
        print(f"phase {phase}: {len(classes)} classes, {len(clips['holdout_targets'])} held-out "
              f"clips", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {"classes": len(classes),
                                 "holdout_clips": len(clips["holdout_targets"])}
        if args.onnx:
            entry["onnx"] = onnx_study(model, classes, clips, extra)
        if args.tflm:
            entry["tflm"] = tflm_study(model, clips, tuple(
                float(p) for p in args.percentiles.split(",") if p), extra)
        print(json.dumps({f"phase_{phase}": entry}), flush=True)  # one JSON line per phase
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
