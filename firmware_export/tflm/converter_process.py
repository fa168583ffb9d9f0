"""The TFLM converter stack (litert-torch, which imports JAX, and ai-edge-quantizer) run in a child
process, so the exporting process never loads it.

Loaded in the exporting process, the stack stayed resident (0.36 GB for litert-torch and JAX) and
each conversion left more: with `--target tflm`, every phase after the first started 0.58 GB
higher. A child started with the spawn method (it shares nothing with the parent) converts and
quantizes on the inputs it is sent (the model's weights, the calibration log-mels) and returns the
finished flatbuffer's bytes; it computes what the parent computed, with the same libraries and
thread count, so the bytes are the same. One child serves a phase's TFLM build (every recipe, and
the embedding build) and ends with it, handing its memory back.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecl.errors import EdgeclError
from firmware_export.child_process import (
    child_answer,
    loaded_model,
    model_bytes,
    spawned_pool,
)


class ConversionFailed(EdgeclError):
    """The converter child failed or died; the message is one line."""


class ConverterProcess:
    """A child process for a phase's TFLM conversions, started at the first one; a context
    manager that ends it. Each method returns what the same call in this process would."""

    def __init__(self, child: bool = True) -> None:
        self.child = child  # False: each call runs here (as the converter functions do)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ConverterProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def float_model(self, model: nn.Module, example: torch.Tensor, fold_norms: bool = True,
                    head: bool = True) -> bytes:
        """convert.float_tflite(rewrite.tflm_graph(model, fold_norms, head), example)."""
        return self._call(_float_model, model_bytes(model), example.numpy(), fold_norms, head)

    def quantized(self, recipe: Any, float_model: bytes, calibration: np.ndarray) -> bytes:
        """build.quantize_recipe(recipe, float_model, calibration): the finished .tflite."""
        return self._call(_quantized, recipe, float_model, calibration)

    def _call(self, function: Callable[..., bytes], *arguments: Any) -> bytes:
        if not self.child:
            return function(*arguments)
        if self._pool is None:
            self._pool = spawned_pool()
        try:
            return child_answer(self._pool, "TFLM conversion", ConversionFailed, function,
                                *arguments)
        except ConversionFailed:
            self.close()  # a pool whose child died takes no more work
            raise


def _float_model(pickled: bytes, example: np.ndarray, fold_norms: bool, head: bool) -> bytes:
    from firmware_export.tflm.convert import float_tflite
    from firmware_export.tflm.rewrite import tflm_graph

    model = loaded_model(pickled)
    return float_tflite(tflm_graph(model, fold_norms, head), torch.from_numpy(example))


def _quantized(recipe: Any, float_model: bytes, calibration: np.ndarray) -> bytes:
    from firmware_export.tflm.build import quantize_recipe
    from firmware_export.tflm.quantize import ranges_kept_for

    # a build's recipes quantize one float model on one calibration: calibrated once
    return quantize_recipe(recipe, float_model, calibration,
                           ranges_kept_for(float_model, calibration))

