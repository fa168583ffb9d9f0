"""The fp32 ONNX export run in a spawned child (firmware_export.export_process): the child's bytes
are the ones an export in this process gives, its proto serializes to them, and a failing child is
one clear line."""

from __future__ import annotations

import pytest
from export_helpers import (
    CLASSES,
    CLIP_SAMPLES,
    SAMPLE_RATE,
    one_thread,  # noqa: F401 (module-wide fixture)
    trained_model,
)

from edgecl.errors import EdgeclError
from firmware_export.export import export_onnx, serialize
from firmware_export.export_process import export_onnx_in_child, exported_bytes

_SETTINGS = dict(labels=CLASSES, sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES)


@pytest.mark.slow
def test_the_child_export_is_the_in_process_export_byte_for_byte():
    model = trained_model().eval()
    here = serialize(export_onnx(model, **_SETTINGS))
    in_child = exported_bytes(model, **_SETTINGS)
    assert in_child == here
    # what the bundle keeps: the parsed proto, serialized again to the same bytes
    assert serialize(export_onnx_in_child(model, **_SETTINGS)) == here
    assert not model.training  # the sent model is a copy; this one is as it was


def test_a_failing_child_is_one_line():
    with pytest.raises(EdgeclError, match="ONNX opset: expected 18") as failed:
        exported_bytes(trained_model().eval(), **_SETTINGS, opset=17)
    assert "\n" not in str(failed.value)
