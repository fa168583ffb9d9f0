"""Accuracy-aware int8 build: try quantization recipes in a fixed order until one meets the parity
rule (firmware_export.parity) on the held-out clips, then fall back to mixed precision.

1. Recipes, cheapest and usually best first (BASE_RECIPES): per-channel or per-tensor weights,
   MinMax / Percentile / Entropy calibration, unsigned or signed activations, and last int8
   weights with 16-bit activations (16x8 QDQ): on an under-trained 50-class run the flips came
   from the backbone's 8-bit activations (a swap test: int8 head on a float backbone kept the
   top-1; int8 backbone with a float or 16-bit head did not), and 16-bit activations kept them.
   Calibration ranges are computed once per method and shared by the candidates that use it.
2. Mixed precision from the best of those: the quantized compute nodes (Conv, MatMul, Gemm) are
   ranked by their measured local quantization noise (onnxruntime's QDQ debugging tools: weight
   SQNR and the SQNR of their output activation's Q/DQ on calibration clips), and kept in float
   one at a time, noisiest first, until the rule holds or the float share of the backbone's MACs
   would pass MAX_FLOAT_SHARE.

Each candidate is first screened at the larger batch size, in an order that spreads the classes
over the held-out clips, and dropped as soon as the clips seen already make the agreement rule
miss on all of them (parity.agreement_miss_certain); only a candidate that passes the screen is
measured at batch 1 too. The fp32 model's logits are computed once per search and batch size
(HeldOut), not once per candidate, and the fp32 graph is copied and pre-processed for the
quantizer once per search (quantize.prepare_graph). The search returns the first candidate that
meets the rule. The closest candidate, when none meets the rule, is measured in full for the
manifest and diagnosed layer by layer (layer_report), for the withheld build's report.

Everything is deterministic for fixed inputs: the recipe order is fixed, calibration is
deterministic and ties in the ranking break on node order. Every candidate tried is recorded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgecl.budget.ram import rss_stage
from edgecl.errors import EdgeclError
from firmware_export import parity
from firmware_export.device.runtime import cpu_session
from firmware_export.export import serialize
from firmware_export.graph import front_end_nodes, node_macs, producers
from firmware_export.quantize import (
    QuantizedModel,
    QuantRecipe,
    WaveformReader,
    prepare_graph,
    quantize_candidate,
    quantized_front_end_inputs,
)

BASE_RECIPES = (
    QuantRecipe(per_channel=True, calibration="MinMax", activations="uint8"),
    QuantRecipe(per_channel=False, calibration="MinMax", activations="uint8"),
    QuantRecipe(per_channel=True, calibration="Percentile", activations="uint8"),
    QuantRecipe(per_channel=True, calibration="Entropy", activations="uint8"),
    QuantRecipe(per_channel=True, calibration="MinMax", activations="int8"),
    QuantRecipe(per_channel=True, calibration="MinMax", activations="int16"),
)
MAX_FLOAT_SHARE = 0.25  # of the backbone's MACs (front end excluded), the unfolded norms included
MAX_MIXED_STEPS = 12  # nodes moved to float one at a time at most
SENSITIVITY_CLIPS = 32
# clips whose intermediate tensors are held at once; the sums do not depend on it, and at
# 44.1 kHz 5 s one clip at a time keeps the ranking's and the diagnosis' peaks lowest
SENSITIVITY_BATCH = 1
COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
POOL_OPS = ("ReduceMean", "GlobalAveragePool")

Log = Callable[[str], None]


@dataclass
class SearchResult:
    """The candidate to ship (or the closest one, when none met the rule) and the search record."""

    model: QuantizedModel
    figures: dict[str, dict[str, float]]
    failures: list[str]
    float_share: float
    tried: list[dict[str, Any]] = field(default_factory=list)
    # Whether each screened clip kept its top-1, in HeldOut's order (see _closest).
    agrees: np.ndarray | None = None
    # Why it was withheld, layer by layer (layer_report), when no candidate met the rule.
    diagnosis: dict[str, Any] | None = None

    @property
    def meets_bound(self) -> bool:
        return not self.failures

    def record(self) -> dict[str, Any]:
        """What the manifest stores about the search."""
        return {"recipe": self.model.recipe.describe(), "float_share_of_backbone_macs":
                round(self.float_share, 4), "candidates_tried": len(self.tried),
                "tried": self.tried, "max_float_share": MAX_FLOAT_SHARE}


def search_int8(fp32: onnx.ModelProto, fp32_runner: parity.Runner, calibration: np.ndarray,
                holdout: np.ndarray, targets: np.ndarray, *,
                recipes: tuple[QuantRecipe, ...] = BASE_RECIPES,
                max_float_share: float = MAX_FLOAT_SHARE, log: Log | None = None,
                progress: Log | None = None) -> SearchResult:
    """The first candidate that meets the int8 parity rule on (holdout, targets), else the
    closest one with its layer-by-layer diagnosis. `progress` is told each candidate as it
    starts. The fp32 graph is prepared for quantization once and shared by every candidate."""
    graph = prepare_graph(fp32)
    backbone = _backbone_macs(graph.source)
    always_float = set(graph.always_float)
    held_out = HeldOut(fp32_runner, holdout, targets)
    with tempfile.TemporaryDirectory(prefix="edgecl-int8-search-") as cache:
        tried: list[dict[str, Any]] = []

        def evaluate(recipe: QuantRecipe) -> SearchResult:
            if progress is not None:
                progress(f"int8 candidate {len(tried) + 1} ({_recipe_text(recipe)})")
            candidate = quantize_candidate(graph, calibration, recipe=recipe, cache_dir=cache)
            offenders = quantized_front_end_inputs(candidate.proto)
            if offenders:
                raise EdgeclError(f"int8 quantization put Q/DQ nodes into the float front end: "
                                  f"{', '.join(offenders)}")
            rss_stage(f"int8 candidate {len(tried) + 1}: screening")
            figures, failures, agrees = held_out.screen(_runner(candidate))
            share = _float_share(always_float | set(recipe.float_nodes), backbone)
            return _note(SearchResult(candidate, figures, failures, share, agrees=agrees),
                         tried, log)

        results: list[SearchResult] = []
        for recipe in recipes:
            results.append(evaluate(recipe))
            if results[-1].meets_bound:
                return _done(results[-1], tried)
        best = _closest(results)
        rss_stage("int8 sensitivity ranking")
        ranking = sensitivity_ranking(graph.source, best.model.proto, calibration)
        floated = list(best.model.recipe.float_nodes)
        for name in ranking[:MAX_MIXED_STEPS]:
            share = _float_share(always_float | set(floated) | {name}, backbone)
            if share > max_float_share:
                break
            floated.append(name)
            results.append(evaluate(replace(best.model.recipe, float_nodes=tuple(floated))))
            if results[-1].meets_bound:
                return _done(results[-1], tried)
        closest = _closest(results)
        if progress is not None:
            progress("int8 withheld: measuring the closest candidate layer by layer")
        closest.figures = held_out.measure(_runner(closest.model))
        closest.failures = parity.int8_failures(closest.figures)
        closest.diagnosis = layer_report(graph.source, closest.model.proto, calibration,
                                         held_out.reference(held_out.sizes[-1]))
        return _done(closest, tried)


def _runner(candidate: QuantizedModel) -> parity.Runner:
    return parity.ort_runner(cpu_session(serialize(candidate.proto)))


class HeldOut:
    """The held-out clips of one search and the fp32 model's logits on them.

    Clips are taken in `spread_order` (a prefix samples every class), in batches of each of
    parity.batch_sizes; the fp32 logits at a batch size are computed on first use and kept.
    Figures are those of parity.compare, which do not depend on the order of the clips.
    """

    def __init__(self, fp32_runner: parity.Runner, waveforms: np.ndarray,
                 targets: np.ndarray) -> None:
        self.fp32_runner, self.waveforms = fp32_runner, waveforms
        self.order = spread_order(targets)
        self.targets = np.asarray(targets)[self.order]
        self.sizes = parity.batch_sizes(len(targets))
        self._reference: dict[int, np.ndarray] = {}

    def reference(self, size: int) -> np.ndarray:
        if size not in self._reference:
            self._reference[size] = np.concatenate(list(self.logits(self.fp32_runner, size)))
        return self._reference[size]

    def logits(self, run: parity.Runner, size: int):
        """Logits of the clips in order, one batch of `size` at a time (float64, as parity)."""
        for start in range(0, len(self.order), size):
            batch = self.waveforms[self.order[start:start + size]]
            yield run(np.ascontiguousarray(batch, dtype=np.float32)).astype(np.float64)

    def measure(self, run: parity.Runner) -> dict[str, dict[str, float]]:
        """parity.measure's figures: every clip at every batch size."""
        return {f"batch_{size}": self._compare(run, size) for size in self.sizes}

    def _compare(self, run: parity.Runner, size: int) -> dict[str, float]:
        return parity.compare(self.reference(size), np.concatenate(list(self.logits(run, size))),
                              self.targets)

    def screen(self, run: parity.Runner) -> tuple[dict[str, dict[str, float]], list[str],
                                                  np.ndarray]:
        """(figures, int8 failures, whether each screened clip kept its top-1) of a candidate:
        at the largest batch size, stopped once the clips seen make the agreement rule miss on
        every clip (the figures then cover those clips and say `screened_of` how many there
        are); at every batch size when it passes."""
        size, n_clips = self.sizes[-1], len(self.order)
        reference = self.reference(size)
        parts: list[np.ndarray] = []
        kept: list[np.ndarray] = []  # per batch: whether each clip kept its top-1
        seen = differ = 0
        for logits in self.logits(run, size):
            kept.append(logits.argmax(axis=1)
                        == reference[seen:seen + len(logits)].argmax(axis=1))
            differ += int(np.sum(~kept[-1]))
            parts.append(logits)
            seen += len(logits)
            if seen < n_clips and parity.agreement_miss_certain(differ, n_clips):
                break
        agrees = np.concatenate(kept)
        figures = parity.compare(reference[:seen], np.concatenate(parts), self.targets[:seen])
        if seen < n_clips:
            figures["screened_of"] = n_clips
        failures = parity.int8_failures({f"batch_{size}": figures})
        if failures or len(self.sizes) == 1:
            return {f"batch_{size}": figures}, failures, agrees
        measured = {f"batch_{other}": self._compare(run, other) for other in self.sizes[:-1]}
        measured[f"batch_{size}"] = figures
        return measured, parity.int8_failures(measured), agrees


def spread_order(targets: np.ndarray) -> np.ndarray:
    """Clip indices taking each class's clips in turn (round-robin over classes, by class then
    position), so every prefix of the order holds the classes in near-equal shares."""
    targets = np.asarray(targets)
    rank = np.zeros(len(targets), dtype=np.int64)
    for value in np.unique(targets):
        members = np.flatnonzero(targets == value)
        rank[members] = np.arange(len(members))
    return np.lexsort((targets, rank))


def _closest(results: list[SearchResult]) -> SearchResult:
    """The failed candidate closest to the rule: the highest top-1 agreement on the clips every
    candidate was screened on. They are the same clips in the same order, so the comparison is
    paired however early each screen stopped; ties keep the earlier (cheaper) candidate."""
    common = min(len(r.agrees) for r in results)
    return max(results, key=lambda r: float(np.mean(r.agrees[:common])))


def _note(result: SearchResult, tried: list[dict[str, Any]], log: Log | None) -> SearchResult:
    worst = min(result.figures.values(), key=lambda f: f["top1_agreement"])
    entry = {**result.model.recipe.describe(), "float_share": round(result.float_share, 4),
             "top1_agreement": worst["top1_agreement"], "clips": worst["clips"],
             "accuracy_drop_points": worst["accuracy_drop_points"],
             "meets_bound": result.meets_bound}
    tried.append(entry)
    if log is not None and not result.meets_bound:
        log(f"    int8 candidate {len(tried)} ({_recipe_text(result.model.recipe)}) misses: "
            + "; ".join(result.failures))
    return result


def _done(result: SearchResult, tried: list[dict[str, Any]]) -> SearchResult:
    result.tried = tried
    return result


def _recipe_text(recipe: QuantRecipe) -> str:
    text = f"{recipe.weight_granularity}, {recipe.calibration}, {recipe.activations} activations"
    return text + (f", {len(recipe.float_nodes)} node(s) float" if recipe.float_nodes else "")


def _backbone_macs(source: onnx.ModelProto) -> dict[str, int]:
    """MACs per clip of every compute node behind the front end, by node name."""
    front = {node.name for node in front_end_nodes(source)}
    return {name: count for name, count in node_macs(source).items() if name not in front}


def _float_share(float_names: set[str], backbone: dict[str, int]) -> float:
    """Share of the backbone's MACs computed by nodes kept in float."""
    total = sum(backbone.values())
    return sum(backbone.get(name, 0) for name in float_names) / total if total else 0.0


def sensitivity_ranking(source: onnx.ModelProto, quantized: onnx.ModelProto,
                        calibration: np.ndarray) -> list[str]:
    """Quantized compute nodes of `quantized`, noisiest first.

    A node's local noise is the sum of the noise-to-signal power of its weight quantization and
    of the Q/DQ of its output activation (node_noise).
    """
    layers = node_noise(source, quantized, calibration)
    order = sorted(range(len(layers)), key=lambda i: (-layers[i]["noise_to_signal"], i))
    return [layers[i]["node"] for i in order]


def node_noise(source: onnx.ModelProto, quantized: onnx.ModelProto,
               calibration: np.ndarray) -> list[dict[str, Any]]:
    """Every quantized compute node of `quantized` in graph order, with its weight SQNR and the
    SQNR of its output activation's Q/DQ (dB; None when that output is not quantized) and their
    summed noise-to-signal power, measured with onnxruntime.quantization's QDQ debugging tools
    on up to SENSITIVITY_CLIPS calibration clips. `source` is the named fp32 graph."""
    from onnxruntime.quantization.qdq_loss_debug import (
        compute_weight_error,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    import models  # noqa: F401  (before onnxruntime.quantization: see firmware_export.quantize)

    with tempfile.TemporaryDirectory(prefix="edgecl-int8-debug-") as folder:
        paths = {name: str(Path(folder) / f"{name}.onnx") for name in ("float", "qdq", "qdq_aug")}
        onnx.save(source, paths["float"])
        onnx.save(quantized, paths["qdq"])
        modify_model_output_intermediate_tensors(paths["qdq"], paths["qdq_aug"])
        activation_sqnr = qdq_activation_sqnr(paths["qdq_aug"], calibration[:SENSITIVITY_CLIPS])
        weight_sqnr = compute_weight_error(create_weight_matching(paths["float"], paths["qdq"]))
    head = set(head_nodes(source))
    layers: list[dict[str, Any]] = []
    for node in source.graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        weight, output = weight_sqnr.get(node.input[1]), activation_sqnr.get(node.output[0])
        if weight is None:  # not quantized (kept float already)
            continue
        power = 10 ** (-weight / 10) + (0.0 if output is None else 10 ** (-output / 10))
        layers.append({"node": node.name, "op": node.op_type,
                       "part": "head" if node.name in head else "backbone",
                       "weight_sqnr_db": round(float(weight), 2),
                       "activation_sqnr_db": None if output is None else round(float(output), 2),
                       "noise_to_signal": float(power)})
    return layers


def head_nodes(source: onnx.ModelProto) -> list[str]:
    """Compute nodes after the last global pooling (ReduceMean, GlobalAveragePool): the
    classifier head; the last compute node when the graph has no such pooling."""
    nodes = list(source.graph.node)
    pools = [i for i, node in enumerate(nodes) if node.op_type in POOL_OPS]
    start = pools[-1] + 1 if pools else max(
        (i for i, node in enumerate(nodes) if node.op_type in COMPUTE_OPS), default=len(nodes))
    return [node.name for node in nodes[start:] if node.op_type in COMPUTE_OPS]


def output_step(quantized: onnx.ModelProto) -> float | None:
    """The int8 step of the logits (the scale of the QuantizeLinear the graph's output is
    dequantized from), or None when the logits are computed in float."""
    graph = quantized.graph
    producer_of = producers(graph)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    node = producer_of.get(graph.output[0].name)
    while node is not None and node.op_type != "QuantizeLinear":
        if node.op_type != "DequantizeLinear" and node.op_type not in ("Reshape", "Identity"):
            return None
        node = producer_of.get(node.input[0])
    if node is None or node.input[1] not in initializers:
        return None
    return float(onnx.numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)[0])


def layer_report(source: onnx.ModelProto, quantized: onnx.ModelProto, calibration: np.ndarray,
                 reference_logits: np.ndarray) -> dict[str, Any]:
    """Where a withheld int8 model loses against fp32: per quantized compute node its weight and
    output-activation SQNR (node_noise), noisiest first, the head's share of the summed noise
    against the backbone's, the fp32 logits' range on the held-out clips and the int8 step of
    the logits (how many steps the range spans, and the median top-2 margin in steps)."""
    layers = node_noise(source, quantized, calibration)
    total = sum(layer["noise_to_signal"] for layer in layers) or 1.0
    head = sum(layer["noise_to_signal"] for layer in layers if layer["part"] == "head")
    step = output_step(quantized)
    logits = np.asarray(reference_logits, dtype=np.float64)
    top2 = np.sort(logits, axis=1)[:, -2:] if logits.shape[1] > 1 else None
    margin = float(np.median(top2[:, 1] - top2[:, 0])) if top2 is not None else None
    logits_record = {"min": round(float(logits.min()), 4), "max": round(float(logits.max()), 4),
                     "median_top2_margin": None if margin is None else round(margin, 4),
                     "int8_step": step}
    if step:
        logits_record["range_in_steps"] = round(float(logits.max() - logits.min()) / step, 1)
        if margin is not None:
            logits_record["median_top2_margin_in_steps"] = round(margin / step, 2)
    ranked = sorted(layers, key=lambda layer: -layer["noise_to_signal"])
    return {"layers_noisiest_first": [dict(layer, noise_to_signal=round(
                layer["noise_to_signal"], 6)) for layer in ranked],
            "head_share_of_noise": round(head / total, 4), "head_nodes": head_nodes(source),
            "logits": logits_record, "sqnr_clips": int(min(len(calibration), SENSITIVITY_CLIPS))}


def qdq_activation_sqnr(augmented_qdq: str, clips: np.ndarray,
                        batch_size: int | None = None) -> dict[str, float]:
    """SQNR in dB of each activation's Q/DQ in the QDQ model (augmented by onnxruntime's
    `modify_model_output_intermediate_tensors`): ||before|| / ||before - after|| over all clips,
    as its `compute_activation_error` gives as `qdq_err`. Summed batch by batch (`batch_size`
    clips, SENSITIVITY_BATCH by default), so only one batch's intermediate tensors are held (all
    32 clips' took 7 GB at 44.1 kHz 5 s). One
    session serves every batch (onnxruntime's `collect_activations` builds one per call)."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import (
        _TENSOR_SAVE_POSTFIX,
        create_activation_matching,
    )

    options = ort.SessionOptions()
    # as collect_activations: unoptimised, so every Q/DQ pair's tensors exist as saved
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(augmented_qdq, options, providers=["CPUExecutionProvider"])
    saved = [(position, output.name[:-len(_TENSOR_SAVE_POSTFIX)])
             for position, output in enumerate(session.get_outputs())
             if output.name.endswith(_TENSOR_SAVE_POSTFIX)]
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for batch in WaveformReader(clips, batch_size or SENSITIVITY_BATCH):
        outputs = session.run(None, batch)
        matching = create_activation_matching({name: [outputs[position]]
                                               for position, name in saved})
        for name, pair in matching.items():
            before = np.concatenate(pair["pre_qdq"]).astype(np.float64).ravel()
            error = before - np.concatenate(pair["post_qdq"]).astype(np.float64).ravel()
            signal[name] = signal.get(name, 0.0) + float(before @ before)
            noise[name] = noise.get(name, 0.0) + float(error @ error)
        del outputs, matching  # freed before the next run allocates its batch's tensors
    eps = float(np.finfo(float).eps)
    return {name: 20 * np.log10(max(np.sqrt(signal[name]), eps) / max(np.sqrt(noise[name]), eps))
            for name in signal}
