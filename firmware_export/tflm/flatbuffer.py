"""Small edits and queries on a .tflite flatbuffer (TFLite schema object API, from tflite-micro).

`finish` makes a quantized model ready for TFLM: every constant inline in the flatbuffer (the
converter stores large ones after it, at an offset, and TFLM read garbage from those), tensor names
dropped (TFLM never reads them), then the file re-packed and aligned by TFLM's own tool.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import flatbuffers
import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

FILE_IDENTIFIER = b"TFL3"
FLOAT_TYPES = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16, schema.TensorType.FLOAT64}
_OP_NAMES = {value: name for name, value in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}


def read(model_bytes: bytes) -> schema.ModelT:
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(model_bytes), 0))


def write(model: schema.ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def op_name(model: schema.ModelT, op: schema.OperatorT) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    return _OP_NAMES[max(code.builtinCode, code.deprecatedBuiltinCode)]


def operators(model_bytes: bytes) -> list[str]:
    """The builtin op of every operator of every subgraph, in order."""
    model = read(model_bytes)
    return [op_name(model, op) for graph in model.subgraphs for op in graph.operators]


def float_operators(model_bytes: bytes) -> list[str]:
    """Operators that read or write a float tensor (a compute op left in float)."""
    model = read(model_bytes)
    found = []
    for graph in model.subgraphs:
        for op in graph.operators:
            tensors = [graph.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
            if any(t.type in FLOAT_TYPES for t in tensors):
                found.append(op_name(model, op))
    return found


def io_tensors(model_bytes: bytes) -> dict[str, list[dict]]:
    """Type name, shape, scale and zero point of the first subgraph's inputs and outputs."""
    model = read(model_bytes)
    graph = model.subgraphs[0]
    types = {value: name for name, value in vars(schema.TensorType).items()
             if not name.startswith("_")}

    def describe(index: int) -> dict:
        tensor = graph.tensors[index]
        q = tensor.quantization
        return {"type": types[tensor.type], "shape": [int(d) for d in tensor.shape],
                "scale": float(q.scale[0]) if q is not None and q.scale is not None else None,
                "zero_point": int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None
                else None}
    return {"inputs": [describe(i) for i in graph.inputs],
            "outputs": [describe(i) for i in graph.outputs]}


_ITEM_BYTES = {schema.TensorType.INT8: 1, schema.TensorType.UINT8: 1, schema.TensorType.BOOL: 1,
               schema.TensorType.INT16: 2, schema.TensorType.FLOAT16: 2,
               schema.TensorType.INT32: 4, schema.TensorType.FLOAT32: 4,
               schema.TensorType.INT64: 8, schema.TensorType.FLOAT64: 8}


def activation_bytes(model: schema.ModelT) -> dict[int, int]:
    """Bytes of every tensor of the first subgraph that is not a constant (the tensors a TFLM
    arena must hold while they are alive), by tensor index."""
    graph = model.subgraphs[0]
    constant = [buffer.data is not None and len(buffer.data) > 0 for buffer in model.buffers]
    return {index: int(np.prod(tensor.shape)) * _ITEM_BYTES[tensor.type]
            for index, tensor in enumerate(graph.tensors) if not constant[tensor.buffer]}


def activation_floor(model_bytes: bytes) -> dict:
    """The most activation bytes alive at once when the first subgraph's operators run in their
    stored order: a tensor is alive from the operator that writes it (a graph input: from the
    start) to the last one that reads it (a graph output: to the end). No memory plan for this
    order needs less; TFLM's arena head (tflm_runtime.arena_split) is this plus what its greedy
    planner loses to fragmentation and the operators' scratch buffers."""
    model = read(model_bytes)
    graph, sizes = model.subgraphs[0], activation_bytes(model)
    end = len(graph.operators)
    born = {index: -1 for index in graph.inputs}
    dies = {index: end for index in graph.outputs}
    for position, op in enumerate(graph.operators):
        for index in op.outputs:
            born.setdefault(index, position)
        for index in op.inputs:
            if index in sizes:
                dies[index] = max(dies.get(index, position), position)
    peak = {"bytes": 0, "operator": None, "op": None}
    for position, op in enumerate(graph.operators):
        alive = sum(sizes[index] for index, start in born.items()
                    if index in sizes and start <= position <= dies.get(index, start))
        if alive > peak["bytes"]:
            peak = {"bytes": alive, "operator": position, "op": op_name(model, op)}
    return peak


def inline_constants(model: schema.ModelT, model_bytes: bytes) -> int:
    """Move every buffer stored after the flatbuffer (offset/size) back inline; returns how
    many moved."""
    moved = 0
    for buffer in model.buffers:
        if buffer.offset:
            start, size = int(buffer.offset), int(buffer.size)
            buffer.data = np.frombuffer(model_bytes[start:start + size], dtype=np.uint8).copy()
            buffer.offset, buffer.size = 0, 0
            moved += 1
    return moved


def drop_tensor_names(model: schema.ModelT) -> None:
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            tensor.name = None


def align(model_bytes: bytes) -> bytes:
    """Re-pack with TFLM's flatbuffer alignment tool (buffers aligned for TFLM's kernels)."""
    from tflite_micro.tensorflow.lite.micro.tools import tflite_flatbuffer_align_wrapper

    with tempfile.TemporaryDirectory(prefix="edgecl-tflm-") as folder:
        source, target = Path(folder) / "in.tflite", Path(folder) / "out.tflite"
        source.write_bytes(model_bytes)
        tflite_flatbuffer_align_wrapper.align_tflite_model(str(source), str(target))
        return target.read_bytes()


def drop_output_requantize(model_bytes: bytes) -> bytes:
    """The model with its 16-bit logits as the output: a trailing QUANTIZE that turns the
    graph's int16 output back into int8 (as the quantizer leaves a 16x8 head) is removed and its
    input becomes the output. Unchanged when the output is not such a QUANTIZE's."""
    model = read(model_bytes)
    graph = model.subgraphs[0]
    last = graph.operators[-1] if graph.operators else None
    if (last is None or op_name(model, last) != "QUANTIZE" or len(graph.outputs) != 1
            or last.outputs[0] != graph.outputs[0]
            or graph.tensors[last.inputs[0]].type != schema.TensorType.INT16):
        return model_bytes
    for signature in model.signatureDefs or []:
        for output in signature.outputs or []:
            if output.tensorIndex == graph.outputs[0]:
                output.tensorIndex = last.inputs[0]
    graph.outputs = np.asarray([last.inputs[0]], dtype=np.int32)
    graph.operators = graph.operators[:-1]
    return write(model)


def finish(model_bytes: bytes) -> bytes:
    """Constants inline, no tensor names, aligned by TFLM's tool."""
    model = read(model_bytes)
    inline_constants(model, model_bytes)
    drop_tensor_names(model)
    return align(write(model))
