"""Float .tflite -> static int8 (weights and activations, int8 input and output) with
ai-edge-quantizer, calibrated on the global min/max of every tensor over the calibration clips.

The quantizer's default calibration keeps a running average of each clip's min and max, which
clips the rare large values: in an early probe the logits' range came out too narrow and their
error reached 16-19. The global min/max over all clips keeps them (the int8 ONNX build calibrates
with MinMax too, on the same clips).
"""

from __future__ import annotations

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


def int8_tflite(float_model: bytes, calibration_logmels: np.ndarray, *, sixteen_bit: str = "none",
                sixteen_bit_scopes: Sequence[str] = (), edit_ranges=None) -> bytes:
    """Quantize `float_model` with calibration inputs [N, 1, n_mels, frames] float32, one clip
    per calibration step. `sixteen_bit` "head": the FULLY_CONNECTED head in 16-bit activations
    with int8 weights (16x8; its int16 logits are requantized to int8 at the output unless
    flatbuffer.drop_output_requantize removes that step); every op whose scope (its output
    tensors' names, "a;b;") matches a regex of `sixteen_bit_scopes` is put in 16x8 too (the
    quantizer inserts the QUANTIZE ops between 8- and 16-bit tensors; a graph input read by such
    an op becomes int16); `edit_ranges(qsvs)` may change the
    calibrated ranges before quantizing."""
    if len(calibration_logmels) == 0:
        raise EdgeclError("TFLM int8 quantization: no calibration clips were given")
    with quiet_fds():  # their imports log to fd 2 (absl, oneDNN)
        from ai_edge_litert import interpreter as litert
        from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
        from ai_edge_quantizer.utils import qsv_utils
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
        calibration = calibrator.Calibrator(float_model, num_threads=1,
                                            qsv_update_func=qsv_utils.min_max_update)
        # Quantizer.calibrate has no option for the update rule; its Calibrator does (the
        # recipe manager it needs is the Quantizer's; the package is pinned exactly).
        calibration.calibrate({signature: samples}, LookupOnce(engine._recipe_manager))
        qsvs = calibration.get_model_qsvs()
        if edit_ranges is not None:
            qsvs = edit_ranges(qsvs)
        result = engine.quantize(qsvs, enable_progress_bar=False,
                                 enable_progress_report=False)
    return bytes(result.quantized_model)
