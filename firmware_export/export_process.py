"""The fp32 ONNX export (firmware_export.export.export_onnx) run in a child process.

The dynamo exporter keeps about 0.22 GB resident in the process that runs it for the rest of
that process (what torch.export, onnxscript and their caches load; gc and malloc_trim do not hand
it back), which an export's later steps then peak on top of. A child started by the spawn method
exports the model it is sent and returns the serialized ModelProto; the export is a function of
the weights and the toolchain versions (firmware_export.export), so the bytes are the ones this
process would write.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from torch import nn

from edgecl.errors import EdgeclError
from firmware_export.child_process import (
    child_answer,
    loaded_model,
    model_bytes,
    spawned_pool,
)
from firmware_export.export import OPSET, export_onnx, serialize


def export_onnx_in_child(model: nn.Module, *, labels: Sequence[str], sample_rate: int,
                         clip_samples: int, opset: int = OPSET) -> onnx.ModelProto:
    """export_onnx(model, ...) computed in a spawned child: the same proto (its serialize() is
    the child's bytes). A failing or dying child is one EdgeclError line."""
    return onnx.load_from_string(exported_bytes(model, labels=labels, sample_rate=sample_rate,
                                                clip_samples=clip_samples, opset=opset))


def exported_bytes(model: nn.Module, *, labels: Sequence[str], sample_rate: int,
                   clip_samples: int, opset: int = OPSET) -> bytes:
    """serialize(export_onnx(model, ...)), computed in a spawned child."""
    arguments = ([str(name) for name in labels], int(sample_rate), int(clip_samples), opset)
    with spawned_pool() as pool:
        return child_answer(pool, "ONNX export", EdgeclError, _exported, model_bytes(model),
                            *arguments)


def _exported(pickled: bytes, labels: list[str], sample_rate: int, clip_samples: int,
              opset: int) -> bytes:
    return serialize(export_onnx(loaded_model(pickled), labels=labels, sample_rate=sample_rate,
                                 clip_samples=clip_samples, opset=opset))
