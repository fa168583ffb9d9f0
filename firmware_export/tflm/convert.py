"""The TFLM graph (firmware_export.tflm.rewrite) -> a float .tflite flatbuffer with litert-torch."""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from edgecl.errors import EdgeclError
from firmware_export.device.tflm_runtime import quiet_fds


def float_tflite(graph: nn.Module, example: torch.Tensor) -> bytes:
    """Convert `graph` (eval mode) for one input shaped like `example` [1, 1, n_mels, frames]."""
    try:
        with warnings.catch_warnings(), quiet_fds():
            warnings.simplefilter("ignore")
            import litert_torch  # its import logs to fd 2 (absl, oneDNN)

            previous = logging.root.manager.disable
            logging.disable(logging.WARNING)
            try:
                converted = litert_torch.convert(graph.eval(), (example,))
                return bytes(converted.model_content())
            finally:
                logging.disable(previous)
    except Exception as error:  # the converter raises many types; surface one clear line
        message = " ".join(str(error).split())[:300]
        raise EdgeclError(f"TFLM conversion (litert-torch) failed: {message}") from error
