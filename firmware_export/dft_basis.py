"""Compute the front end's DFT basis inside the graph instead of storing it.

The conv-DFT front end multiplies each frame by a Hann-windowed cosine/sine basis held as a
[2 * bins, 1, n_fft] weight: 254 x 256 floats (254 KiB) at 8 kHz, about 1 MiB at 16 kHz, which is
most of the int8 file since the front end stays float. The basis is a formula of three integers,
so it is replaced by a handful of nodes (Range, Mul, Mod, Cos, Sin, ...) that ONNX Runtime folds
into a constant when the session starts. The phase is reduced modulo n_fft in integers first, so
the float32 cosines stay accurate (max difference from the stored basis about 1e-7).

The factored DFT (models.factored_dft) stores two such formulas, its stage-1 kernels (window
times N1-point DFT) and its stage-2 kernels (twiddle times N2-point DFT), 0.1 to 0.5 MB; both are
computed the same way, each phase index reduced modulo its DFT size in integers.

The rewrite applies only after a stored weight is recognised: the conv DFT's bin range is read off
the first row, the factored stages' sizes off the Conv's shape and group count, and the whole
rebuilt weight must match the stored one within MATCH_TOLERANCE; otherwise the graph is left as
it is.
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


def _constants(prefix: str, values: dict[str, object]) -> list:
    """int64 scalars and vectors (python ints and lists) and float32 scalars (floats) as named
    initializers `<prefix>_<key>`."""
    tensors = []
    for key, value in values.items():
        if isinstance(value, float):
            array = np.array(value, np.float32)
        else:
            array = np.array(value, np.int64)
        tensors.append(numpy_helper.from_array(array, f"{prefix}_{key}"))
    return tensors


def _phase_nodes(p: str, index: str, modulus: str, step: str, output: str) -> list:
    """`output` = float32(`index` mod `modulus`) * `step` (integer phase reduced first)."""
    node = helper.make_node
    return [node("Mod", [index, modulus], [f"{output}_mod"]),
            node("Cast", [f"{output}_mod"], [f"{output}_float"], to=TensorProto.FLOAT),
            node("Mul", [f"{output}_float", step], [output])]


def _hann_nodes(p: str, index: str, output: str) -> list:
    """`output` = the periodic Hann window 0.5 - 0.5 cos(2 pi `index` / n_fft) at the integer
    positions `index` (needs the constants `<p>_n_fft`, `<p>_step` = 2 pi / n_fft, `<p>_half`)."""
    node = helper.make_node
    return [*_phase_nodes(p, index, f"{p}_n_fft", f"{p}_step", f"{output}_phase"),
            node("Cos", [f"{output}_phase"], [f"{output}_cos"]),
            node("Mul", [f"{output}_cos", f"{p}_half"], [f"{output}_half"]),
            node("Sub", [f"{p}_half", f"{output}_half"], [output])]


def _basis_nodes(output: str, n_fft: int, first_bin: int, n_bins: int,
                 p: str = PREFIX) -> tuple[list, list]:
    """Nodes computing the basis [2B, 1, N] into `output`, and the small constants they need
    (named with the prefix `p`)."""
    constants = _constants(p, {"zero": 0, "one": 1, "n_fft": n_fft, "first": first_bin,
                               "stop": first_bin + n_bins, "axis0": [0], "axis1": [1],
                               "step": 2 * math.pi / n_fft, "half": 0.5})
    node = helper.make_node
    nodes = [
        node("Range", [f"{p}_zero", f"{p}_n_fft", f"{p}_one"], [f"{p}_n"]),
        node("Range", [f"{p}_first", f"{p}_stop", f"{p}_one"], [f"{p}_k"]),
        node("Unsqueeze", [f"{p}_k", f"{p}_axis1"], [f"{p}_k_col"]),
        node("Unsqueeze", [f"{p}_n", f"{p}_axis0"], [f"{p}_n_row"]),
        node("Mul", [f"{p}_k_col", f"{p}_n_row"], [f"{p}_kn"]),
        *_phase_nodes(p, f"{p}_kn", f"{p}_n_fft", f"{p}_step", f"{p}_phase"),
        node("Cos", [f"{p}_phase"], [f"{p}_cos"]),
        node("Sin", [f"{p}_phase"], [f"{p}_sin"]),
        node("Concat", [f"{p}_cos", f"{p}_sin"], [f"{p}_rows"], axis=0),
        *_hann_nodes(p, f"{p}_n", f"{p}_window"),
        node("Mul", [f"{p}_rows", f"{p}_window"], [f"{p}_basis"]),
        node("Unsqueeze", [f"{p}_basis", f"{p}_axis1"], [output]),
    ]
    return nodes, constants


def _factored_stage1_nodes(p: str, output: str, n1: int, n2: int) -> tuple[list, list]:
    """Nodes computing FactoredDft's stage-1 weight [N2 * 2 * N1, 1, N1] into `output`:
    w[N2 n1 + n2] * (cos, -sin)(2 pi (k1 n1 mod N1) / N1), laid out [n2, 2, k1, 1, n1]."""
    n_fft = n1 * n2
    constants = _constants(p, {"zero": 0, "one": 1, "n1": n1, "n2": n2, "n_fft": n_fft,
                               "axis0": [0], "axis1": [1], "axes12": [1, 2],
                               "step1": 2 * math.pi / n1, "step": 2 * math.pi / n_fft,
                               "half": 0.5, "shape": [n2 * 2 * n1, 1, n1]})
    node = helper.make_node
    nodes = [
        node("Range", [f"{p}_zero", f"{p}_n1", f"{p}_one"], [f"{p}_r1"]),
        node("Range", [f"{p}_zero", f"{p}_n2", f"{p}_one"], [f"{p}_r2"]),
        node("Unsqueeze", [f"{p}_r1", f"{p}_axis1"], [f"{p}_r1_col"]),
        node("Unsqueeze", [f"{p}_r1", f"{p}_axis0"], [f"{p}_r1_row"]),
        node("Mul", [f"{p}_r1_col", f"{p}_r1_row"], [f"{p}_k1n1"]),  # [k1, n1]
        *_phase_nodes(p, f"{p}_k1n1", f"{p}_n1", f"{p}_step1", f"{p}_phase"),
        node("Cos", [f"{p}_phase"], [f"{p}_cos"]),
        node("Sin", [f"{p}_phase"], [f"{p}_sin"]),
        node("Neg", [f"{p}_sin"], [f"{p}_minus_sin"]),
        node("Unsqueeze", [f"{p}_cos", f"{p}_axis0"], [f"{p}_cos_1"]),
        node("Unsqueeze", [f"{p}_minus_sin", f"{p}_axis0"], [f"{p}_minus_sin_1"]),
        node("Concat", [f"{p}_cos_1", f"{p}_minus_sin_1"], [f"{p}_trig"], axis=0),  # [2, k1, n1]
        # window index N2 n1 + n2 as [n2, 1, 1, n1]
        node("Mul", [f"{p}_r1", f"{p}_n2"], [f"{p}_r1_n2"]),
        node("Unsqueeze", [f"{p}_r1_n2", f"{p}_axis0"], [f"{p}_r1_n2_row"]),
        node("Unsqueeze", [f"{p}_r2", f"{p}_axis1"], [f"{p}_r2_col"]),
        node("Add", [f"{p}_r1_n2_row", f"{p}_r2_col"], [f"{p}_n"]),  # [n2, n1]
        *_hann_nodes(p, f"{p}_n", f"{p}_window"),
        node("Unsqueeze", [f"{p}_window", f"{p}_axes12"], [f"{p}_window_4d"]),
        node("Mul", [f"{p}_trig", f"{p}_window_4d"], [f"{p}_weights"]),  # [n2, 2, k1, n1]
        node("Reshape", [f"{p}_weights", f"{p}_shape"], [output]),
    ]
    return nodes, constants


def _factored_stage2_nodes(p: str, output: str, n1: int, n2: int, k2: int) -> tuple[list, list]:
    """Nodes computing FactoredDft's stage-2 weight [N1 * 2 * K2, 2 * N2, 1] into `output`: with
    phase 2 pi (n2 (k1 + N1 k2) mod n_fft) / n_fft, rows (real, imaginary) per (k1, k2) over
    inputs (real, imaginary) x n2: [cos, sin] and [-sin, cos], laid out [k1, 2, k2, 2 n2]."""
    n_fft = n1 * n2
    constants = _constants(p, {"zero": 0, "one": 1, "n1": n1, "n2": n2, "k2": k2,
                               "n_fft": n_fft, "axis1": [1], "axes01": [0, 1], "axis2": [2],
                               "step": 2 * math.pi / n_fft, "shape": [n1 * 2 * k2, 2 * n2, 1]})
    node = helper.make_node
    nodes = [
        node("Range", [f"{p}_zero", f"{p}_n1", f"{p}_one"], [f"{p}_r1"]),
        node("Range", [f"{p}_zero", f"{p}_n2", f"{p}_one"], [f"{p}_r2"]),
        node("Range", [f"{p}_zero", f"{p}_k2", f"{p}_one"], [f"{p}_rk2"]),
        node("Mul", [f"{p}_rk2", f"{p}_n1"], [f"{p}_n1k2"]),
        node("Unsqueeze", [f"{p}_r1", f"{p}_axis1"], [f"{p}_r1_col"]),
        node("Add", [f"{p}_r1_col", f"{p}_n1k2"], [f"{p}_bin"]),  # [k1, k2]: k1 + N1 k2
        node("Unsqueeze", [f"{p}_bin", f"{p}_axis2"], [f"{p}_bin_3d"]),
        node("Unsqueeze", [f"{p}_r2", f"{p}_axes01"], [f"{p}_r2_3d"]),
        node("Mul", [f"{p}_bin_3d", f"{p}_r2_3d"], [f"{p}_index"]),  # [k1, k2, n2]
        *_phase_nodes(p, f"{p}_index", f"{p}_n_fft", f"{p}_step", f"{p}_phase"),
        node("Cos", [f"{p}_phase"], [f"{p}_cos"]),
        node("Sin", [f"{p}_phase"], [f"{p}_sin"]),
        node("Neg", [f"{p}_sin"], [f"{p}_minus_sin"]),
        node("Concat", [f"{p}_cos", f"{p}_sin"], [f"{p}_real"], axis=2),  # [k1, k2, 2 n2]
        node("Concat", [f"{p}_minus_sin", f"{p}_cos"], [f"{p}_imag"], axis=2),
        node("Unsqueeze", [f"{p}_real", f"{p}_axis1"], [f"{p}_real_4d"]),
        node("Unsqueeze", [f"{p}_imag", f"{p}_axis1"], [f"{p}_imag_4d"]),
        node("Concat", [f"{p}_real_4d", f"{p}_imag_4d"], [f"{p}_weights"], axis=1),
        node("Reshape", [f"{p}_weights", f"{p}_shape"], [output]),
    ]
    return nodes, constants


def _factored_match(weight: np.ndarray, groups: int) -> tuple[str, tuple[int, ...]] | None:
    """("stage1", (N1, N2)) or ("stage2", (N1, N2, K2)) when `weight` (float64) is one of
    FactoredDft's stored weights for the Conv's `groups`, else None."""
    from models.factored_dft import FactoredDft

    if weight.ndim != 3 or groups < 2 or weight.shape[0] % (2 * groups):
        return None
    rows, inputs, kernel = weight.shape
    if inputs == 1:  # stage 1: groups N2, kernel N1
        n1, n2 = kernel, groups
        if rows != n2 * 2 * n1:
            return None
        stage, sizes, last_bin = "stage1", (n1, n2), 1
    elif kernel == 1 and inputs % 2 == 0:  # stage 2: groups N1, inputs 2 N2, rows N1 * 2 * K2
        n1, n2, k2 = groups, inputs // 2, rows // (2 * groups)
        stage, sizes, last_bin = "stage2", (n1, n2, k2), k2 * n1
    else:
        return None
    if n1 < 2 or n2 < 2:
        return None
    reference = FactoredDft(n1 * n2, n2, n1, last_bin, dtype=torch.float64)
    rebuilt = getattr(reference, stage).numpy()
    if rebuilt.shape != weight.shape or np.abs(rebuilt - weight).max() > MATCH_TOLERANCE:
        return None
    return stage, sizes


def _recognised(weight: np.ndarray, groups: int, prefix: str, output: str
                ) -> tuple[list, list] | None:
    """(nodes, constants) computing `weight` into `output`, or None if it is no known formula."""
    if groups == 1:
        first = _match(weight)
        if first is None:
            return None
        return _basis_nodes(output, weight.shape[2], first, weight.shape[0] // 2, prefix)
    found = _factored_match(weight, groups)
    if found is None:
        return None
    stage, sizes = found
    builder = _factored_stage1_nodes if stage == "stage1" else _factored_stage2_nodes
    return builder(prefix, output, *sizes)


def compute_dft_basis_in_graph(model: onnx.ModelProto) -> bool:
    """Replace every stored DFT weight of the front end's Convs (the conv DFT's basis, the
    factored DFT's two stages) by nodes computing it, in place.

    Returns True if the graph was rewritten, False if no recognisable weight was found.
    """
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    convs = [n for n in front_end_nodes(model)
             if n.op_type == "Conv" and n.input[1] in initializers]
    rewritten = 0
    for conv in convs:
        tensor = initializers[conv.input[1]]
        if sum(name == tensor.name for node in graph.node for name in node.input) != 1:
            continue  # shared with another node: leave it
        groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
        weight = numpy_helper.to_array(tensor).astype(np.float64)
        prefix = PREFIX if rewritten == 0 else f"{PREFIX}{rewritten}"
        found = _recognised(weight, groups, prefix, tensor.name)
        if found is None:
            continue
        nodes, constants = found
        graph.initializer.remove(tensor)
        graph.initializer.extend(constants)
        position = list(graph.node).index(conv)
        for offset, new_node in enumerate(nodes):
            new_node.name = f"{prefix}_{offset}_{new_node.op_type}"
            graph.node.insert(position + offset, new_node)
        rewritten += 1
    return rewritten > 0
