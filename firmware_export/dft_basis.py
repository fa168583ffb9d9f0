"""Compute the front end's DFT basis inside the graph instead of storing it.

The conv-DFT front end multiplies each frame by a Hann-windowed cosine/sine basis held as a
[2 * bins, 1, n_fft] weight: 254 x 256 floats (254 KiB) at 8 kHz, about 1 MiB at 16 kHz, which is
most of the int8 file since the front end stays float. The basis is a formula of three integers,
so it is replaced by a handful of nodes (Range, Mul, Mod, Cos, Sin, ...) that ONNX Runtime folds
into a constant when the session starts. The phase is reduced modulo n_fft in integers first, so
the float32 cosines stay accurate (max difference from the stored basis about 1e-7).

The rewrite applies only after the stored weight is recognised: the bin range is read off the
first row and the whole rebuilt basis must match the stored one within MATCH_TOLERANCE;
otherwise the graph is left as it is.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from firmware_export.graph import front_end_nodes

MATCH_TOLERANCE = 1e-5
PREFIX = "dft_basis"


def hann_dft_basis(n_fft: int, first_bin: int, n_bins: int) -> np.ndarray:
    """[2 * n_bins, n_fft] float64 rows of the front end's own basis (models.frontend)."""
    from models.frontend import dft_kernels

    return dft_kernels(n_fft, first_bin, first_bin + n_bins, dtype=torch.float64)[:, 0].numpy()


def _match(weight: np.ndarray) -> int | None:
    """The first bin of a stored [2B, 1, N] basis, or None if it is not a Hann DFT basis."""
    if weight.ndim != 3 or weight.shape[1] != 1 or weight.shape[0] % 2:
        return None
    rows, n_fft = weight.shape[0], weight.shape[2]
    n_bins = rows // 2
    candidates = range(0, n_fft // 2 + 2 - n_bins)
    if not candidates:
        return None
    first_rows = np.stack([hann_dft_basis(n_fft, k, 1)[0] for k in candidates])
    first = int(np.argmin(np.abs(first_rows - weight[0, 0]).max(axis=1)))
    rebuilt = hann_dft_basis(n_fft, first, n_bins)
    return first if np.abs(rebuilt - weight[:, 0, :]).max() <= MATCH_TOLERANCE else None


def _basis_nodes(output: str, n_fft: int, first_bin: int, n_bins: int) -> tuple[list, list]:
    """Nodes computing the basis [2B, 1, N] into `output`, and the small constants they need."""
    p = PREFIX
    constants = [
        numpy_helper.from_array(np.array(0, np.int64), f"{p}_zero"),
        numpy_helper.from_array(np.array(1, np.int64), f"{p}_one"),
        numpy_helper.from_array(np.array(n_fft, np.int64), f"{p}_n_fft"),
        numpy_helper.from_array(np.array(first_bin, np.int64), f"{p}_first"),
        numpy_helper.from_array(np.array(first_bin + n_bins, np.int64), f"{p}_stop"),
        numpy_helper.from_array(np.array([0], np.int64), f"{p}_axis0"),
        numpy_helper.from_array(np.array([1], np.int64), f"{p}_axis1"),
        numpy_helper.from_array(np.array(2 * math.pi / n_fft, np.float32), f"{p}_step"),
        numpy_helper.from_array(np.array(0.5, np.float32), f"{p}_half"),
    ]
    node = helper.make_node
    nodes = [
        node("Range", [f"{p}_zero", f"{p}_n_fft", f"{p}_one"], [f"{p}_n"]),
        node("Range", [f"{p}_first", f"{p}_stop", f"{p}_one"], [f"{p}_k"]),
        node("Unsqueeze", [f"{p}_k", f"{p}_axis1"], [f"{p}_k_col"]),
        node("Unsqueeze", [f"{p}_n", f"{p}_axis0"], [f"{p}_n_row"]),
        node("Mul", [f"{p}_k_col", f"{p}_n_row"], [f"{p}_kn"]),
        node("Mod", [f"{p}_kn", f"{p}_n_fft"], [f"{p}_kn_mod"]),  # exact integer phase index
        node("Cast", [f"{p}_kn_mod"], [f"{p}_kn_float"], to=TensorProto.FLOAT),
        node("Mul", [f"{p}_kn_float", f"{p}_step"], [f"{p}_phase"]),
        node("Cos", [f"{p}_phase"], [f"{p}_cos"]),
        node("Sin", [f"{p}_phase"], [f"{p}_sin"]),
        node("Concat", [f"{p}_cos", f"{p}_sin"], [f"{p}_rows"], axis=0),
        node("Cast", [f"{p}_n"], [f"{p}_n_float"], to=TensorProto.FLOAT),
        node("Mul", [f"{p}_n_float", f"{p}_step"], [f"{p}_window_phase"]),
        node("Cos", [f"{p}_window_phase"], [f"{p}_window_cos"]),
        node("Mul", [f"{p}_window_cos", f"{p}_half"], [f"{p}_window_half"]),
        node("Sub", [f"{p}_half", f"{p}_window_half"], [f"{p}_window"]),  # periodic Hann
        node("Mul", [f"{p}_rows", f"{p}_window"], [f"{p}_basis"]),
        node("Unsqueeze", [f"{p}_basis", f"{p}_axis1"], [output]),
    ]
    return nodes, constants


def compute_dft_basis_in_graph(model: onnx.ModelProto) -> bool:
    """Replace the stored DFT basis of the front end's Conv by nodes computing it, in place.

    Returns True if the graph was rewritten, False if no recognisable basis was found.
    """
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    convs = [n for n in front_end_nodes(model)
             if n.op_type == "Conv" and n.input[1] in initializers]
    for conv in convs:
        tensor = initializers[conv.input[1]]
        weight = numpy_helper.to_array(tensor).astype(np.float64)
        first = _match(weight)
        if first is None:
            continue
        if sum(name == tensor.name for node in graph.node for name in node.input) != 1:
            continue  # shared with another node: leave it
        nodes, constants = _basis_nodes(tensor.name, weight.shape[2], first, weight.shape[0] // 2)
        graph.initializer.remove(tensor)
        graph.initializer.extend(constants)
        position = list(graph.node).index(conv)
        for offset, new_node in enumerate(nodes):
            new_node.name = f"{PREFIX}_{offset}_{new_node.op_type}"
            graph.node.insert(position + offset, new_node)
        return True
    return False
