"""Float .tflite -> static int8 (weights and activations, int8 input and output) with
ai-edge-quantizer, calibrated on the global min/max of every tensor over the calibration clips.

The quantizer's default calibration keeps a running average of each clip's min and max, which
clips the rare large values: in an early probe the logits' range came out too narrow and their
error reached 16-19. The global min/max over all clips keeps them (the int8 ONNX build calibrates
with MinMax too, on the same clips).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecl.errors import EdgeclError
from firmware_export.device.tflm_runtime import quiet_fds

# Ops put in 16-bit activations with int8 weights (16x8, TFLM reference kernels). Only the head:
# every op so would make the model's input int16 too, which the device front end does not give.
SIXTEEN_BIT = {"none": (), "head": ("FULLY_CONNECTED",)}


class LookupOnce:
    """A recipe manager as the calibrator asks it: each (op, scope)'s algorithm looked up once.
    The manager's lookup validates every matching config again, for every op at every
    calibration step (about 40% of the calibration's time); its answer depends on the op and
    scope alone, and the calibrator reads only the algorithm's name."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._found: dict[tuple[Any, str], tuple[str, Any]] = {}

    def get_quantization_configs(self, target_op_name: Any, scope_name: str) -> tuple[str, Any]:
        key = (target_op_name, scope_name)
        if key not in self._found:
            self._found[key] = self._manager.get_quantization_configs(target_op_name, scope_name)
        return self._found[key]


class KeptRanges:
    """One float model's calibrated ranges by tensor index, for its other quantizations. The
    recipes of a build quantize the same function on the same clips, differing in bit widths
    and tensor names (recipes.named_outputs) only; the calibration finds each activation
    tensor's min and max over the clips whatever the bit widths, so the first calibration
    serves every recipe. `calibrations` counts the calibrations made."""

    def __init__(self) -> None:
        self.by_index: dict[int, Any] | None = None
        self.n_tensors = 0
        self.calibrations = 0

    def keep(self, float_model: bytes, qsvs: dict[str, Any]) -> None:
        """Keep `qsvs` (by tensor name of `float_model`), unless a name is not unique."""
        names = _tensor_names(float_model)
        if len(set(names)) == len(names):
            index = {name: i for i, name in enumerate(names)}
            self.by_index = {index[name]: qsv for name, qsv in qsvs.items()}
            self.n_tensors = len(names)

    def named_for(self, float_model: bytes) -> dict[str, Any] | None:
        """The kept ranges under `float_model`'s tensor names, in the calibration's order."""
        names = _tensor_names(float_model)
        if self.by_index is None or len(names) != self.n_tensors:
            return None
        return {names[i]: copy.deepcopy(qsv) for i, qsv in self.by_index.items()}


_LAST: list[tuple[bytes, KeptRanges]] = []


def ranges_kept_for(float_model: bytes, calibration_logmels: np.ndarray) -> KeptRanges:
    """The KeptRanges of this process's last quantization of `float_model` on
    `calibration_logmels`, or a new one (the last only: a build's recipes come one after
    another, each a call of its converter's child)."""
    from firmware_export.parity import array_key

    key = hashlib.blake2b(float_model, digest_size=20).digest() + array_key(calibration_logmels)
    if not _LAST or _LAST[0][0] != key:
        _LAST[:] = [(key, KeptRanges())]
    return _LAST[0][1]


def _tensor_names(float_model: bytes) -> list[str]:
    from firmware_export.tflm import flatbuffer

    graph = flatbuffer.read(float_model).subgraphs[0]
    return [tensor.name.decode("utf-8") for tensor in graph.tensors]


def int8_tflite(float_model: bytes, calibration_logmels: np.ndarray, *, sixteen_bit: str = "none",
                sixteen_bit_scopes: Sequence[str] = (), edit_ranges=None,
                kept: KeptRanges | None = None) -> bytes:
    """Quantize `float_model` with calibration inputs [N, 1, n_mels, frames] float32, one clip
    per calibration step. `sixteen_bit` "head": the FULLY_CONNECTED head in 16-bit activations
    with int8 weights (16x8; its int16 logits are requantized to int8 at the output unless
    flatbuffer.drop_output_requantize removes that step); every op whose scope (its output
    tensors' names, "a;b;") matches a regex of `sixteen_bit_scopes` is put in 16x8 too (the
    quantizer inserts the QUANTIZE ops between 8- and 16-bit tensors; a graph input read by such
    an op becomes int16); `edit_ranges(qsvs)` may change the
    calibrated ranges before quantizing. `kept` (the same function's ranges, on the same
    calibration inputs) stands for the calibration once it holds ranges, and is given this
    one's otherwise."""
    if len(calibration_logmels) == 0:
        raise EdgeclError("TFLM int8 quantization: no calibration clips were given")
    with quiet_fds():  # their imports log to fd 2 (absl, oneDNN)
        from ai_edge_litert import interpreter as litert
        from ai_edge_quantizer import quantizer, recipe, recipe_manager
    signatures = litert.Interpreter(model_content=float_model).get_signature_list()
    (signature, io_names), = signatures.items()
    (input_name,) = io_names["inputs"]
    samples = [{input_name: np.ascontiguousarray(x[None], dtype=np.float32)}
               for x in calibration_logmels]
    with quiet_fds():
        manager = recipe_manager.RecipeManager()
        manager.add_static_config(".*", recipe.TFLOperationName.ALL_SUPPORTED,
                                  activation_num_bits=8, weight_num_bits=8)
        for op in SIXTEEN_BIT[sixteen_bit]:
            manager.add_static_config(".*", getattr(recipe.TFLOperationName, op),
                                      activation_num_bits=16, weight_num_bits=8)
        for scope in sixteen_bit_scopes:
            manager.add_static_config(scope, recipe.TFLOperationName.ALL_SUPPORTED,
                                      activation_num_bits=16, weight_num_bits=8)
        engine = quantizer.Quantizer(float_model, manager.get_quantization_recipe())
        qsvs = kept.named_for(float_model) if kept is not None else None
        if qsvs is None:
            qsvs = _calibrated(float_model, signature, samples, engine)
            if kept is not None:
                kept.calibrations += 1
                kept.keep(float_model, copy.deepcopy(qsvs))
        if edit_ranges is not None:
            qsvs = edit_ranges(qsvs)
        result = engine.quantize(qsvs, enable_progress_bar=False,
                                 enable_progress_report=False)
    return bytes(result.quantized_model)


def _calibrated(float_model: bytes, signature: str, samples: list, engine: Any) -> dict[str, Any]:
    """Every activation tensor's global min and max over `samples`, by tensor name."""
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    calibration = calibrator.Calibrator(float_model, num_threads=1,
                                        qsv_update_func=qsv_utils.min_max_update)
    # Quantizer.calibrate has no option for the update rule; its Calibrator does (the
    # recipe manager it needs is the Quantizer's; the package is pinned exactly).
    calibration.calibrate({signature: samples}, LookupOnce(engine._recipe_manager))
    qsvs: dict[str, Any] = calibration.get_model_qsvs()
    return qsvs
