"""The check every ONNX model edgecl writes passes (torch-free, so the device runtime's head
graphs use it as the exporter does)."""

from __future__ import annotations

import onnx

from edgecl.errors import EdgeclError


def check_model(model: onnx.ModelProto) -> None:
    """onnx.checker full check (with strict shape inference); EdgeclError if it fails."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        message = " ".join(str(error).split())[:300]
        raise EdgeclError(f"ONNX model fails onnx.checker: {message}") from None
