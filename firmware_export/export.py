"""PyTorch -> fp32 ONNX: waveform in, logits out, one self-contained file with stable bytes.

The graph comes from the dynamo exporter (`torch.onnx.export(..., dynamo=True)`) in eval mode with
a dynamic batch axis and a fixed clip length. The exporter annotates every node with stack traces,
source paths and FX names; those differ between checkouts and machines, so they are stripped and
the producer is fixed, which makes the bytes a function of the weights and the toolchain versions
only. What the runtime needs to interpret the outputs (labels, sample rate, clip length) is written
into the model's metadata, so a lone model file stays usable. The front end's DFT basis is computed
by the graph rather than stored (firmware_export.dft_basis), which removes most of the file.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence

import onnx
import torch
from torch import nn

from edgecl import __version__
from edgecl.errors import EdgeclError
from firmware_export.device.layout import (
    INPUT_NAME,
    META_CLIP_SAMPLES,
    META_LABELS,
    META_SAMPLE_RATE,
    OUTPUT_NAME,
)
from firmware_export.device.onnx_check import check_model
from firmware_export.dft_basis import compute_dft_basis_in_graph
from models.classifier import LogitsOnly

OPSET = 18
PRODUCER_NAME = "edgecl.firmware_export"
# Upper bound of the symbolic batch axis; the exporter needs one, devices never reach it.
MAX_BATCH = 4096


def strip_annotations(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop doc strings and per-node/value metadata in place; fix the producer. Returns `model`."""
    model.doc_string = ""
    model.producer_name = PRODUCER_NAME
    model.producer_version = __version__
    del model.metadata_props[:]
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        graph.doc_string = ""
        del graph.metadata_props[:]
        for value in (*graph.input, *graph.output, *graph.value_info):
            value.doc_string = ""
            del value.metadata_props[:]
        for tensor in graph.initializer:
            tensor.doc_string = ""
            del tensor.metadata_props[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
    for function in model.functions:
        function.doc_string = ""
        del function.metadata_props[:]
    return model


def shorten_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename every node (n0, n1, ...) and every tensor but the graph's input and output (t0, ...)
    in graph order, in place. The exporter's names ("model.backbone.layers.11.temporal...") are
    repeated by every Q/DQ node the quantizer adds: about a quarter of an int8 file. A graph with
    subgraphs is left alone (its inner names would need scoping). Returns `model`."""
    graph = model.graph
    if any(attribute.HasField("g") or attribute.graphs
           for node in graph.node for attribute in node.attribute):
        return model
    keep = {value.name for value in (*graph.input, *graph.output)}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return renamed.setdefault(name, f"t{len(renamed)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    for value in graph.value_info:
        value.name = short(value.name)
    return model


def set_runtime_metadata(model: onnx.ModelProto, labels: Sequence[str], sample_rate: int,
                         clip_samples: int) -> None:
    """Record labels, sample rate and clip length in the model's metadata_props (replacing any)."""
    entries = {META_LABELS: json.dumps(list(labels), ensure_ascii=False),
               META_SAMPLE_RATE: str(int(sample_rate)), META_CLIP_SAMPLES: str(int(clip_samples))}
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for prop in kept:
        model.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)


def serialize(model: onnx.ModelProto) -> bytes:
    """Deterministic serialisation (protobuf maps and fields in a fixed order)."""
    return model.SerializeToString(deterministic=True)


def export_onnx(model: nn.Module, *, labels: Sequence[str], sample_rate: int,
                clip_samples: int, opset: int = OPSET) -> onnx.ModelProto:
    """Export `model` (waveform -> logits or (logits, ...)) to a checked fp32 ONNX ModelProto.

    The model is exported in eval mode on CPU (its training flag is restored afterwards); the batch
    axis is dynamic, the clip length fixed at `clip_samples`. Weights are embedded in the proto.
    """
    if opset < 18:
        raise EdgeclError(f"ONNX opset: expected 18 or newer, got {opset}")
    graph = LogitsOnly(model).cpu()
    was_training = model.training
    model.eval()
    example = torch.zeros(2, int(clip_samples), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings(), _quiet_exporter_logs():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph, (example,), dynamo=True, opset_version=opset, external_data=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},), optimize=True, verbose=False)
    except Exception as error:  # the exporter raises many types; surface one clear line
        message = " ".join(str(error).split())[:300]
        raise EdgeclError(f"ONNX export failed for {type(model).__name__}: {message}") from error
    finally:
        model.train(was_training)
    proto = strip_annotations(program.model_proto)
    compute_dft_basis_in_graph(proto)
    shorten_names(proto)
    set_runtime_metadata(proto, labels, sample_rate, clip_samples)
    check_model(proto)
    return proto


class _quiet_exporter_logs:
    """Silence the exporter's progress chatter (torchvision warnings, 'Translate the graph...')."""

    _names = ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")

    def __enter__(self) -> None:
        self._levels = [(logging.getLogger(n), logging.getLogger(n).level) for n in self._names]
        for logger, _ in self._levels:
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc) -> None:
        for logger, level in self._levels:
            logger.setLevel(level)
