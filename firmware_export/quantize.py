"""fp32 ONNX -> static int8 QDQ ONNX with onnxruntime.quantization, front end kept in float.

The log-mel front end (reflect pad, DFT conv, power, mel MatMul, log) has a dynamic range of many
decades before the log; 8-bit codes there would wipe out quiet clips. Every node up to and including
the first Log is therefore excluded from quantization, so no QuantizeLinear/DequantizeLinear sits
upstream of the log. Calibration is MinMax over the given waveforms (deterministic for fixed
data). Weights are quantized per tensor or per output channel (`quantize_candidate`); the bundle
builds both and keeps the one that tracks the fp32 model better.

Normalisations the exporter could not fold into a convolution (BC-ResNet's SubSpectralNorm: a
BatchNorm over sub-bands, behind a Reshape) also stay in float, together with the convolution that
feeds them: with one activation scale for the conv output, channels with a small range are rounded
away and then amplified by the BatchNorm. On a BC-ResNet-40 trained on FSDD, keeping those nine
depthwise 3x1 convs and their norms in float halved the int8 logit error (mean 0.136 -> 0.068).

Weights use 7 of their 8 bits (`reduce_range`): ONNX Runtime's int8 kernels on x86 CPUs without
VNNI multiply in 16-bit pairs that saturate with full-range weights. On a tiny BC-ResNet this
saturation alone dropped per-channel top-1 agreement with fp32 from 99% to 96% (max logit error
7.4 instead of 1.2); with 7-bit weights the fused kernels match the reference QDQ arithmetic.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

# Import order matters: onnxruntime.quantization appends onnxruntime/transformers to sys.path, and
# its `models` folder would then shadow this project's `models` package for later imports.
import models  # noqa: F401
from edgecl.errors import EdgeclError
from firmware_export.calibration import HISTOGRAM_METHODS, histogram_ranges
from firmware_export.device.layout import INPUT_NAME
from firmware_export.device.onnx_check import check_model
from firmware_export.export import strip_annotations
from firmware_export.graph import consumers, front_end_nodes, producers

# Clips per calibration pass: only one batch's intermediate tensors are held at once (at 44.1 kHz
# 5 s, 16 clips held 1.2 GB above the model and its clips, 4 hold 0.15 GB). No range depends on
# it: MinMax merges exactly, the histogram methods use fixed bins (firmware_export.calibration).
CALIBRATION_BATCH = 4
CALIBRATION_STRIDE = 1  # batches per calibration pass (onnxruntime's CalibStridedMinMax)
REDUCE_RANGE = True
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
SHAPE_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose")


CALIBRATION_METHODS = {"MinMax": CalibrationMethod.MinMax,
                       "Percentile": CalibrationMethod.Percentile,
                       "Entropy": CalibrationMethod.Entropy}
ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8,
                    "int16": QuantType.QInt16}


@dataclass(frozen=True)
class QuantRecipe:
    """How one int8 candidate is built: weight granularity, calibration method, activation type,
    and the backbone nodes kept in float on top of the front end and the unfolded norms."""

    per_channel: bool = True
    calibration: str = "MinMax"
    activations: str = "uint8"
    float_nodes: tuple[str, ...] = ()

    @property
    def weight_granularity(self) -> str:
        return "per-channel" if self.per_channel else "per-tensor"

    def describe(self) -> dict[str, Any]:
        return {"weights": self.weight_granularity, "calibration": self.calibration,
                "activations": self.activations, "float_nodes": list(self.float_nodes)}


@dataclass(frozen=True)
class QuantizedModel:
    """One int8 candidate: the proto, the recipe that built it, and what stayed float."""

    proto: onnx.ModelProto
    recipe: QuantRecipe
    float_nodes: int  # nodes deliberately left unquantized (front end, unfolded norms, chosen)

    @property
    def per_channel(self) -> bool:
        return self.recipe.per_channel

    @property
    def weight_granularity(self) -> str:
        return self.recipe.weight_granularity


class WaveformReader(CalibrationDataReader):
    """Feeds calibration waveforms [N, T] to the calibrator in equal batches, in order.

    Equal sizes matter: the histogram calibrators (Percentile, Entropy) stack the outputs of the
    batches they are given into one array, which fails on a short last batch. The batch is the
    largest divisor of N up to `batch_size` (MinMax ranges do not depend on it). `set_range`
    limits the reader to batches [start, end): onnxruntime's `CalibStridedMinMax` uses it to
    calibrate one stride of batches at a time.
    """

    def __init__(self, waveforms: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> None:
        count = len(waveforms)
        size = max(d for d in range(1, max(1, min(batch_size, count)) + 1) if count % d == 0)
        self._batches = [np.ascontiguousarray(waveforms[i:i + size], dtype=np.float32)
                         for i in range(0, count, size)]
        self._end = len(self._batches)
        self._position = 0

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._end = min(end_index, len(self._batches))
        self._position = start_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= self._end:
            return None
        batch = self._batches[self._position]
        self._position += 1
        return {INPUT_NAME: batch}


def unfolded_norm_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """BatchNormalization nodes left in the graph, each with the Conv feeding it and the shape-only
    ops (Reshape, ...) around it: the groups kept in float."""
    graph = model.graph
    producer_of, consumers_of = producers(graph), consumers(graph)
    found: dict[int, onnx.NodeProto] = {}
    for norm in (node for node in graph.node if node.op_type == "BatchNormalization"):
        found[id(norm)] = norm
        upstream = producer_of.get(norm.input[0])
        while upstream is not None and upstream.op_type in SHAPE_OPS:
            found[id(upstream)] = upstream
            upstream = producer_of.get(upstream.input[0])
        if upstream is not None and upstream.op_type == "Conv":
            found[id(upstream)] = upstream
        downstream = consumers_of.get(norm.output[0], [])
        while len(downstream) == 1 and downstream[0].op_type in SHAPE_OPS:
            found[id(downstream[0])] = downstream[0]
            downstream = consumers_of.get(downstream[0].output[0], [])
    return [node for node in graph.node if id(node) in found]


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (nodes_to_exclude matches on names)."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    duplicate = onnx.ModelProto()
    duplicate.CopyFrom(model)
    return duplicate


def prepared_source(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `fp32` with unique node names (nodes_to_exclude matches on names)."""
    source = _copy(fp32)
    _name_nodes(source)
    return source


def default_float_nodes(source: onnx.ModelProto) -> list[str]:
    """Names of the nodes every candidate keeps in float: front end and unfolded norms."""
    return list(dict.fromkeys(node.name for node in front_end_nodes(source)
                              + unfolded_norm_nodes(source)))


@dataclass(frozen=True)
class PreparedGraph:
    """The fp32 graph as every int8 candidate of a phase starts from: `source` (a named copy),
    `prepared` (onnxruntime's pre-processing of it) and the nodes every candidate keeps float.
    Built once per phase (`prepare_graph`) and shared by every candidate of the search."""

    fp32: onnx.ModelProto
    source: onnx.ModelProto
    prepared: onnx.ModelProto
    always_float: tuple[str, ...]


def prepare_graph(fp32: onnx.ModelProto) -> PreparedGraph:
    """Copy, name and pre-process `fp32` for quantization (see PreparedGraph)."""
    source = prepared_source(fp32)
    with tempfile.TemporaryDirectory(prefix="edgecl-quant-prep-") as folder:
        prepared = pre_processed(source, Path(folder))
    return PreparedGraph(fp32, source, prepared, tuple(default_float_nodes(source)))


def quantize_candidate(graph: onnx.ModelProto | PreparedGraph,
                       calibration_waveforms: np.ndarray, *, per_channel: bool | None = None,
                       recipe: QuantRecipe | None = None,
                       cache_dir: str | Path | None = None,
                       extra_options: dict[str, Any] | None = None) -> QuantizedModel:
    """Static int8 QDQ quantization of an fp32 model (or its PreparedGraph, which a search builds
    once for all its candidates) by `recipe` (or the default recipe with the given weight
    granularity); the front end and the unfolded normalisations (with their convs) stay float.
    With `cache_dir`, calibration ranges are computed once per calibration method and reused by
    later candidates (they do not depend on the other recipe fields)."""
    if len(calibration_waveforms) == 0:
        raise EdgeclError("int8 quantization: no calibration waveforms were given")
    if recipe is None:
        recipe = QuantRecipe(per_channel=True if per_channel is None else per_channel)
    if not isinstance(graph, PreparedGraph):
        graph = prepare_graph(graph)
    fp32 = graph.fp32
    excluded = list(dict.fromkeys([*graph.always_float, *recipe.float_nodes]))
    with tempfile.TemporaryDirectory(prefix="edgecl-quant-") as folder:
        output = Path(folder) / "model.int8.onnx"
        cache = Path(cache_dir or folder) / f"ranges-{recipe.calibration}.json"
        if recipe.calibration in HISTOGRAM_METHODS and not cache.is_file():
            _stream_histogram_ranges(graph, recipe.calibration, calibration_waveforms, cache)
        # The histogram calibrators print their progress to stdout: keep a run's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                # a copy: onnxruntime moves a given proto's weights to external data in place
                _copy(graph.prepared), output, WaveformReader(calibration_waveforms),
                quant_format=QuantFormat.QDQ, per_channel=recipe.per_channel,
                reduce_range=REDUCE_RANGE, activation_type=ACTIVATION_TYPES[recipe.activations],
                weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                calibrate_method=CALIBRATION_METHODS[recipe.calibration],
                use_external_data_format=False, calibration_cache_path=cache,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                               # One batch at a time: MinMax merges its ranges exactly (the
                               # histogram methods' ranges are in the cache already).
                               "CalibStridedMinMax": CALIBRATION_STRIDE,
                               # BatchNormalization scales are rank 1: their channel axis is 0.
                               "QDQOpTypePerChannelSupportToAxis": {
                                   "BatchNormalization": 0}, **(extra_options or {})})
        proto = onnx.load(str(output), load_external_data=False)
    store_front_end_matrices_as_int8(proto)
    del proto.graph.value_info[:]  # shape hints only: ONNX Runtime infers them again at load
    # Carry the runtime metadata (labels, rate, clip length) over from the fp32 model.
    metadata = {p.key: p.value for p in fp32.metadata_props}
    strip_annotations(proto)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    check_model(proto)
    return QuantizedModel(proto=proto, recipe=recipe, float_nodes=len(excluded))


def _stream_histogram_ranges(graph: PreparedGraph, method: str, waveforms: np.ndarray,
                             cache: Path) -> None:
    """Write `method`'s ranges for `graph` to `cache` (onnxruntime's calibration cache), with
    the fixed bins of firmware_export.calibration, one batch of clips at a time, for the tensors
    a candidate can read (read_tensors); the tensors' extremes are kept beside `cache` for the
    other histogram method."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory(prefix="edgecl-calib-") as folder:
        source = Path(folder) / "model.onnx"
        onnx.save(graph.prepared, str(source))
        ranges = histogram_ranges(source, method, WaveformReader(waveforms), Path(folder),
                                  extremes_file=cache.parent / "extremes.pickle",
                                  only=read_tensors(graph))
    save_tensors_data(ranges, cache)


def read_tensors(graph: PreparedGraph) -> set[str]:
    """The tensors whose ranges a candidate of `graph` can read: the inputs and outputs of the
    nodes it may quantize. Every candidate keeps `always_float` in float (a mixed one more), so
    this covers them all; the rest (the front end's frames and spectra, the float norms' groups)
    were about two thirds of a 44.1 kHz clip's calibrated values."""
    always_float = set(graph.always_float)
    return {name for node in graph.prepared.graph.node if node.name not in always_float
            for name in (*node.input, *node.output)}


def store_front_end_matrices_as_int8(model: onnx.ModelProto) -> None:
    """Store the front end's constant MatMul matrices (the mel filterbank, a third of an int8
    file) as int8 with one scale per row, rebuilt in float by Cast and Mul. The front end still
    computes in float (no Q/DQ reaches it) and ONNX Runtime folds the rebuild at load; the
    filterbank's 8-bit rounding (0.4% of a row's peak) is far below the activation quantization
    that follows the log."""
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    matrices = [name for node in front_end_nodes(model) if node.op_type == "MatMul"
                for name in node.input if name in initializers
                and len(initializers[name].dims) == 2]
    rebuild = []
    for name in dict.fromkeys(matrices):
        weights = onnx.numpy_helper.to_array(initializers[name]).astype(np.float32)
        peak = np.abs(weights).max(axis=1, keepdims=True)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        codes = np.clip(np.round(weights / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend([onnx.numpy_helper.from_array(codes, f"{name}_int8"),
                                  onnx.numpy_helper.from_array(scale, f"{name}_scale")])
        rebuild += [onnx.helper.make_node("Cast", [f"{name}_int8"], [f"{name}_cast"],
                                          name=f"{name}_cast", to=onnx.TensorProto.FLOAT),
                    onnx.helper.make_node("Mul", [f"{name}_cast", f"{name}_scale"], [name],
                                          name=f"{name}_rebuild")]
    if rebuild:
        nodes = rebuild + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)


def pre_processed(source: onnx.ModelProto, folder: Path) -> onnx.ModelProto:
    """onnxruntime's quantization pre-processing (shape inference, marked as done so the quantizer
    does not warn). Its graph optimisation is skipped: the exporter already optimised the graph,
    and ONNX Runtime's would fold the front end's computed DFT basis back into a stored one."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    plain, prepared = folder / "source.onnx", folder / "prepared.onnx"
    onnx.save(source, str(plain))
    quant_pre_process(str(plain), str(prepared), skip_optimization=True)
    return onnx.load(str(prepared))


def quantized_front_end_inputs(model: onnx.ModelProto) -> list[str]:
    """Names of front-end nodes that are Q/DQ nodes or read a Q/DQ output (empty when all float)."""
    producer_of = producers(model.graph)
    offenders = []
    for node in front_end_nodes(model):
        if node.op_type in QDQ_OPS or any(
                name in producer_of and producer_of[name].op_type in QDQ_OPS for name in node.input):
            offenders.append(node.name or node.op_type)
    return offenders
