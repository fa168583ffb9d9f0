"""Where a TFLM arena goes (firmware_export.tflm.flatbuffer.activation_floor): the activation
bytes alive at once in the graph's operator order, on a hand-made graph whose answer is known.
Skipped without the tflm extra."""

from __future__ import annotations

import pytest

pytest.importorskip("tflite_micro", reason="the tflm extra is not installed")

from firmware_export.tflm import flatbuffer  # noqa: E402

schema = flatbuffer.schema


def _graph(shapes: list[list[int]], constants: set[int], operators: list[tuple[list, list]],
           inputs: list[int], outputs: list[int]) -> bytes:
    """A one-subgraph model of int8 tensors `shapes` (those in `constants` hold data) whose
    ADD operators read and write the given tensor indices, in order."""
    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    model.operatorCodes = [code]
    model.buffers = [schema.BufferT()]  # buffer 0: the empty one every tensor without data uses
    graph = schema.SubGraphT()
    graph.tensors = []
    for index, shape in enumerate(shapes):
        tensor = schema.TensorT()
        tensor.shape, tensor.type, tensor.buffer = shape, schema.TensorType.INT8, 0
        if index in constants:
            buffer = schema.BufferT()
            buffer.data = [1] * (shape[0] * shape[1])
            model.buffers.append(buffer)
            tensor.buffer = len(model.buffers) - 1
        graph.tensors.append(tensor)
    graph.operators = []
    for reads, writes in operators:
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, reads, writes
        graph.operators.append(op)
    graph.inputs, graph.outputs = inputs, outputs
    model.subgraphs = [graph]
    return flatbuffer.write(model)


def test_the_floor_counts_what_is_alive_at_each_operator():
    # t0 (input, 100 B) -> op0 -> t1 (50 B) -> op1 (+ constant t4) -> t2 (30 B);
    # op2 adds the input back (a residual): t0 stays alive through op2 -> t3 (output, 10 B).
    model = _graph([[10, 10], [5, 10], [3, 10], [1, 10], [40, 40]], constants={4},
                   operators=[([0], [1]), ([1, 4], [2]), ([0, 2], [3])],
                   inputs=[0], outputs=[3])
    floor = flatbuffer.activation_floor(model)
    # op1: t0 (kept for op2) + t1 + t2 = 180; the constant's 1,600 bytes are not activations.
    assert floor == {"bytes": 180, "operator": 1, "op": "ADD"}
    assert flatbuffer.activation_bytes(flatbuffer.read(model)) == {0: 100, 1: 50, 2: 30, 3: 10}


def test_a_tensor_dead_before_the_peak_is_not_counted():
    # Without the residual, t0 dies at op0: op0 holds t0 + t1 = 150, op1 holds t1 + t2 = 80.
    model = _graph([[10, 10], [5, 10], [3, 10], [1, 10]], constants=set(),
                   operators=[([0], [1]), ([1], [2]), ([2], [3])], inputs=[0], outputs=[3])
    assert flatbuffer.activation_floor(model) == {"bytes": 150, "operator": 0, "op": "ADD"}
