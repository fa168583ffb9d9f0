"""The device model of an analytic head with a random expansion: the embedding model, then the
standardisation, the fixed projection P, a ReLU and the ridge head (firmware_export.device.analytic).
Such a head is not one linear map of the embedding, so it is not folded into a single Gemm as
head_graph.analytic_model does for a head without expansion; the graph spells it out (float32)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from firmware_export.device.analytic import AnalyticHead
from firmware_export.device.head_graph import analytic_model
from firmware_export.device.layout import EMBEDDING_NAME

HIDDEN = "analytic_expanded"


def expanded_model(embedding: onnx.ModelProto, head: AnalyticHead) -> onnx.ModelProto:
    """The embedding model with `head` (expansion > 0) on its embedding: logits =
    max(((z - mean) / std) P, 0) W[:-1] + W[-1], its labels in the metadata."""
    projection = head.projection()
    assert projection is not None, "expanded_model needs a head with an expansion"
    scaled = projection / head.std[:, None]  # ((z - mean) / std) P = z (P / std) - (mean / std) P
    inner = onnx.ModelProto()
    inner.CopyFrom(embedding)
    graph = inner.graph
    constants = {"analytic_projection": scaled, "analytic_projection_bias": -(head.mean @ scaled)}
    graph.initializer.extend([numpy_helper.from_array(np.asarray(value, np.float32), name)
                              for name, value in constants.items()])
    rename = f"{EMBEDDING_NAME}_raw"
    for node in graph.node:
        node.output[:] = [rename if name == EMBEDDING_NAME else name for name in node.output]
    graph.node.extend([
        helper.make_node("Gemm", [rename, *constants], ["analytic_projected"],
                         name="analytic_projection"),
        helper.make_node("Relu", ["analytic_projected"], [EMBEDDING_NAME], name="analytic_relu")])
    # The ReLU's output is the head's input: the ridge head on it is the plain Gemm head.
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = head.expansion
    return analytic_model(inner, head.w[:-1], head.w[-1], head.labels)
