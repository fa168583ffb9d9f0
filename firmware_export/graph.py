"""Small ONNX graph queries shared by the exporter, the quantizer and the benchmark."""

from __future__ import annotations

import numpy as np
import onnx

from edgecl.errors import EdgeclError


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that outputs it."""
    return {output: node for node in graph.node for output in node.output}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def front_end_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The first Log node and every node it depends on: the log-mel front end, in graph order."""
    graph = model.graph
    log_nodes = [node for node in graph.node if node.op_type == "Log"]
    if not log_nodes:
        raise EdgeclError("the ONNX graph has no Log node, so its log-mel front end cannot be "
                          "located")
    producer_of = producers(graph)
    found: dict[int, onnx.NodeProto] = {}
    pending = [log_nodes[0]]
    while pending:
        node = pending.pop()
        if id(node) in found:
            continue
        found[id(node)] = node
        pending.extend(producer_of[name] for name in node.input if name in producer_of)
    return [node for node in graph.node if id(node) in found]


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates per clip (batch 1) of each Conv, MatMul and Gemm node whose weight is
    an initializer, from ONNX shape inference; nodes whose shapes cannot be inferred count 0."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {value.name: [d.dim_value if d.HasField("dim_value") else 1
                           for d in value.type.tensor_type.shape.dim]
              for value in (*inferred.graph.value_info, *inferred.graph.output,
                            *inferred.graph.input)}
    weights = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    macs: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        weight, output = weights.get(node.input[1]), shapes.get(node.output[0])
        if weight is None or not output:
            macs[node.name] = 0
            continue
        output = [1, *output[1:]]  # per clip
        if node.op_type == "Conv":  # weight [C_out, C_in / groups, k...]
            per_output = int(np.prod(weight[1:]))
        else:  # MatMul / Gemm: weight [K, N] (Gemm may be transposed: K is the smaller match)
            transposed = any(a.name == "transB" and a.i for a in node.attribute)
            per_output = weight[1] if transposed else weight[0]
        macs[node.name] = int(np.prod(output)) * int(per_output)
    return macs
