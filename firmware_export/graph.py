"""Small ONNX graph queries shared by the exporter, the quantizer and the benchmark."""

from __future__ import annotations

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
