"""The TFLM quantizer's 16-bit options on a small pooled-head graph: the head (FULLY_CONNECTED) in
16-bit activations with int8 weights gives int16 logits once the trailing requantization is
dropped, runs in TFLM's reference kernels, and its logits step is far finer than int8's.
Skipped without the tflm extra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

for _package in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert", "tflite_micro"):
    pytest.importorskip(_package, reason="the tflm extra is not installed")

from firmware_export.device.tflm_runtime import (  # noqa: E402
    MicroModel,
    _bisect_arena,
    find_arena,
    quiet_fds,
)
from firmware_export.tflm import flatbuffer  # noqa: E402
from firmware_export.tflm.convert import float_tflite  # noqa: E402
from firmware_export.tflm.quantize import int8_tflite  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
INT16 = 7  # schema.TensorType.INT16


class _PooledHead(torch.nn.Module):
    """log-mel [1, 1, 16, 20] -> conv, ReLU, mean over time and frequency -> 12 logits whose
    range is wide (weights x 8), so the int8 logits step is coarse."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 24, 3, padding=1)
        self.fc = torch.nn.Linear(24, 12)
        with torch.no_grad():
            self.fc.weight.mul_(8.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def graph_and_inputs():
    graph = _PooledHead().eval()
    inputs = torch.randn(40, 1, 1, 16, 20, generator=torch.Generator().manual_seed(1))
    return graph, float_tflite(graph, inputs[0]), inputs


def _micro(model_bytes: bytes) -> MicroModel:
    model = flatbuffer.finish(model_bytes)
    return MicroModel(model, find_arena(model))


def _errors(graph, micro: MicroModel, inputs) -> np.ndarray:
    with torch.no_grad():
        expected = np.stack([graph(x).numpy().reshape(-1) for x in inputs])
    got = np.stack([micro.run_logmel(x[0, 0].numpy()) for x in inputs])
    return np.abs(got - expected)


def test_a_sixteen_bit_head_gives_int16_logits_on_a_far_finer_step(graph_and_inputs):
    graph, float_model, inputs = graph_and_inputs
    calibration = inputs[:32, 0].numpy()
    plain = _micro(int8_tflite(float_model, calibration))
    quantized = int8_tflite(float_model, calibration, sixteen_bit="head")
    # The quantizer requantizes the 16-bit logits to int8 at the output ...
    assert flatbuffer.operators(quantized)[-1] == "QUANTIZE"
    head = flatbuffer.drop_output_requantize(quantized)
    # ... which drop_output_requantize removes: the graph now ends with the 16x8 FC.
    assert flatbuffer.operators(head)[-1] == "FULLY_CONNECTED"
    assert flatbuffer.io_tensors(head)["outputs"][0]["type"] == "INT16"
    assert not flatbuffer.float_operators(head)
    sixteen = _micro(head)
    assert sixteen.output.scale < plain.output.scale / 100
    held_out = inputs[32:]
    assert _errors(graph, sixteen, held_out).max() < _errors(graph, plain, held_out).max()


def test_the_arena_search_finds_the_bisections_arena_in_int8_and_16_bit(graph_and_inputs):
    _, float_model, inputs = graph_and_inputs
    calibration = inputs[:32, 0].numpy()
    for quantized in (int8_tflite(float_model, calibration),
                      int8_tflite(float_model, calibration, sixteen_bit="head")):
        model = flatbuffer.finish(flatbuffer.drop_output_requantize(quantized))
        with quiet_fds():
            assert find_arena(model) == _bisect_arena(model)


def test_drop_output_requantize_leaves_an_int8_output_alone(graph_and_inputs):
    _, float_model, inputs = graph_and_inputs
    quantized = int8_tflite(float_model, inputs[:8, 0].numpy())
    assert flatbuffer.drop_output_requantize(quantized) == quantized


@pytest.mark.parametrize("sixteen_bit", ["none", "head"])
def test_looking_each_op_up_once_quantizes_to_the_same_bytes(graph_and_inputs, monkeypatch,
                                                            sixteen_bit):
    from firmware_export.tflm import quantize

    _, float_model, inputs = graph_and_inputs
    calibration = inputs[:8, 0].numpy()
    once = int8_tflite(float_model, calibration, sixteen_bit=sixteen_bit)
    asked: list[tuple] = []

    class Counting(quantize.LookupOnce):
        def __init__(self, manager):
            super().__init__(manager)
            plain = manager.get_quantization_configs
            self._manager = type("Asked", (), {"get_quantization_configs": staticmethod(
                lambda *key: asked.append(key) or plain(*key))})()

    monkeypatch.setattr(quantize, "LookupOnce", Counting)
    assert int8_tflite(float_model, calibration, sixteen_bit=sixteen_bit) == once
    assert asked and len(asked) == len(set(asked))  # each (op, scope) once over 8 steps
    monkeypatch.setattr(quantize, "LookupOnce", lambda manager: manager)  # every step asks
    assert int8_tflite(float_model, calibration, sixteen_bit=sixteen_bit) == once


def test_every_recipe_quantizes_to_the_same_bytes_on_the_first_recipes_ranges(graph_and_inputs):
    from firmware_export.tflm.build import quantize_recipe
    from firmware_export.tflm.quantize import KeptRanges
    from firmware_export.tflm.recipes import RECIPES

    _, float_model, inputs = graph_and_inputs
    calibration = inputs[:8, 0].numpy()
    kept = KeptRanges()
    shared = [quantize_recipe(recipe, float_model, calibration, kept) for recipe in RECIPES]
    alone = [quantize_recipe(recipe, float_model, calibration) for recipe in RECIPES]
    assert kept.calibrations == 1
    assert shared == alone
    assert len(set(alone)) == len(RECIPES)  # the recipes do differ


def test_the_converter_child_keeps_the_ranges_of_one_model_on_one_calibration(graph_and_inputs):
    from firmware_export.tflm.quantize import ranges_kept_for

    _, float_model, inputs = graph_and_inputs
    calibration = inputs[:8, 0].numpy()
    kept = ranges_kept_for(float_model, calibration)
    assert ranges_kept_for(float_model, calibration.copy()) is kept
    assert ranges_kept_for(float_model, calibration[:7]) is not kept  # other clips: calibrate
    assert ranges_kept_for(float_model + b"\0", calibration) is not kept
