"""ONNX graphs around the classifier head, built with onnx.helper (no torch).

`embedding_model`: the bundle's fp32 model (waveform -> logits) cut before its final Gemm (the
Linear head), so it outputs the embedding: the same nodes and weights, so the same numbers as the
shipped model computes before its head. `trained_head` reads that Gemm's weights. `analytic_model`
puts a new Gemm on the embedding model: the analytic head with the embedding's standardisation
folded in (firmware_export.device.analytic.AnalyticHead.folded), so a learnt bundle's device model
is again one ONNX file, waveform in, logits out, with its labels in its metadata: `edgecl infer`
and any ONNX runtime run it as they run a trained bundle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecl.errors import EdgeclError
from firmware_export.device.layout import EMBEDDING_NAME, META_LABELS, OUTPUT_NAME
from firmware_export.device.onnx_check import check_model

HEAD_WEIGHT = "analytic_head_weight"
HEAD_BIAS = "analytic_head_bias"


def _head_node(model: onnx.ModelProto) -> onnx.NodeProto:
    """The Gemm that produces the graph's logits from the embedding and two initializers."""
    producers = [node for node in model.graph.node if OUTPUT_NAME in node.output]
    initializers = {tensor.name for tensor in model.graph.initializer}
    if (len(producers) != 1 or producers[0].op_type != "Gemm" or len(producers[0].input) != 3
            or not set(producers[0].input[1:]) <= initializers):
        raise EdgeclError(f"ONNX model: expected its {OUTPUT_NAME!r} output to come from one Gemm "
                          f"on the embedding (the Linear head); cannot find the embedding")
    node: onnx.NodeProto = producers[0]
    return node


def trained_head(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    """(A [D, C], b [C]) of the model's head: logits = embedding A + b."""
    node = _head_node(model)
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = tensors[node.input[1]].astype(np.float64)
    if attributes.get("transB", 0):
        weight = weight.T
    if attributes.get("transA", 0):
        raise EdgeclError("ONNX model: a transposed embedding in the head's Gemm is not supported")
    alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
    return alpha * weight, beta * tensors[node.input[2]].astype(np.float64).reshape(-1)


def embedding_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` without its head: output EMBEDDING_NAME [batch, D] float."""
    node = _head_node(model)
    source = node.input[0]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    graph.node.remove(next(n for n in graph.node if n.output == node.output))
    for each in graph.node:
        each.output[:] = [EMBEDDING_NAME if name == source else name for name in each.output]
        each.input[:] = [EMBEDDING_NAME if name == source else name for name in each.input]
    used = {name for each in graph.node for name in each.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    kept_info = [v for v in graph.value_info if v.name not in (source, EMBEDDING_NAME)]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    dim = trained_head(model)[0].shape[0]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(
        EMBEDDING_NAME, TensorProto.FLOAT, [batch.dim_param or batch.dim_value or None, dim]))
    check_model(out)
    return out


def analytic_model(embedding: onnx.ModelProto, weight: np.ndarray, bias: np.ndarray,
                   labels: Sequence[str]) -> onnx.ModelProto:
    """The embedding model with a Gemm head: logits = embedding weight + bias (float32), its
    metadata's labels set to `labels`."""
    weight = np.asarray(weight, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32).reshape(-1)
    if weight.shape[1] != len(labels) or bias.size != len(labels):
        raise EdgeclError(f"analytic head: {weight.shape[1]} columns for {len(labels)} labels")
    out = onnx.ModelProto()
    out.CopyFrom(embedding)
    graph = out.graph
    if [o.name for o in graph.output] != [EMBEDDING_NAME]:
        raise EdgeclError(f"ONNX model: expected one output {EMBEDDING_NAME!r}")
    graph.initializer.extend([numpy_helper.from_array(weight, HEAD_WEIGHT),
                              numpy_helper.from_array(bias, HEAD_BIAS)])
    graph.node.append(helper.make_node("Gemm", [EMBEDDING_NAME, HEAD_WEIGHT, HEAD_BIAS],
                                       [OUTPUT_NAME], name="analytic_head"))
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(
        OUTPUT_NAME, TensorProto.FLOAT, [batch.dim_param or batch.dim_value or None,
                                         len(labels)]))
    for prop in out.metadata_props:
        if prop.key == META_LABELS:
            prop.value = json.dumps(list(labels), ensure_ascii=False)
    check_model(out)
    return out

