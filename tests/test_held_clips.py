"""The held-out clips held as their 16-bit codes (firmware_export.held_clips): every batch handed
out is the float32 clips' bytes, a clip that is not such codes keeps every clip in float32, and
the parity check and the int8 search give the same figures on them as on the float32 array."""

from __future__ import annotations

import numpy as np
import pytest
from export_helpers import (
    CLASSES,
    CLIP_SAMPLES,
    SAMPLE_RATE,
    one_thread,  # noqa: F401 (module-wide fixture)
    tones,
    trained_model,
)

from firmware_export import parity
from firmware_export.held_clips import HeldClips, int16_codes


def _as_decoded_pcm16(waves: np.ndarray) -> np.ndarray:
    """Clips as a 16-bit PCM file decodes them: each sample an int16 code / 32768."""
    codes = np.clip(np.round(waves * 32768), -32768, 32767) + 0.0  # + 0.0: no -0.0
    return (codes / 32768).astype(np.float32)


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_pcm16_samples_are_held_as_codes_and_handed_out_as_the_same_float32():
    waves = _as_decoded_pcm16(tones(9, seed=4)[0])
    waves[0, :3] = [-1.0, 32767 / 32768, 0.0]  # full scale both ways
    held = HeldClips.decoded(list(range(9)), lambda index: waves[index])
    assert held.nbytes_held == waves.nbytes // 2 and held.shape == waves.shape
    assert _same_bytes(held[:], waves) and _same_bytes(held[2:7], waves[2:7])
    order = np.array([8, 0, 3])
    assert _same_bytes(held[order], waves[order]) and _same_bytes(held[4], waves[4])
    assert all(_same_bytes(clip, wave) for clip, wave in zip(held, waves, strict=True))
    assert _same_bytes(np.asarray(held), waves)


def test_a_clip_that_is_not_pcm16_codes_keeps_every_clip_in_float32():
    waves = _as_decoded_pcm16(tones(6, seed=5)[0])
    waves[4, 10] += 1e-6  # between two codes (resampled or float audio)
    held = HeldClips.decoded(list(range(6)), lambda index: waves[index])
    assert held.nbytes_held == waves.nbytes
    assert _same_bytes(held[:], waves)


@pytest.mark.parametrize("value", [1.0, 1e-6, np.nan, -0.0])
def test_values_without_an_int16_code_have_none(value):
    wave = np.zeros(4, dtype=np.float32)
    wave[1] = value  # +1.0 is one past the largest code; -0.0 no code gives
    assert int16_codes(wave) is None
    assert int16_codes(np.float32([0.5, -0.25, 3 / 32768])) is not None


def _fp32_runner():
    from firmware_export.device.runtime import cpu_session
    from firmware_export.export import export_onnx, serialize

    model = trained_model()
    graph = export_onnx(model, labels=CLASSES, sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES)
    return model, parity.ort_runner(cpu_session(serialize(graph)))


def test_parity_on_held_codes_equals_parity_on_the_float32_clips():
    model, fp32 = _fp32_runner()
    waves, targets = tones(40, seed=3)
    waves = _as_decoded_pcm16(waves)
    held = HeldClips.decoded(list(range(len(waves))), lambda index: waves[index])
    assert held.nbytes_held < waves.nbytes  # held as codes
    on_array = parity.measure(parity.torch_runner(model), fp32, waves, targets)
    on_held = parity.measure(parity.torch_runner(model), fp32, held, targets)
    assert on_held == on_array and set(on_held) == {"batch_1", "batch_32"}
    from firmware_export.int8_search import HeldOut

    quantized = HeldOut(fp32, held, targets).measure(lambda batch: fp32(batch) + batch[:, :1])
    plain = HeldOut(fp32, waves, targets).measure(lambda batch: fp32(batch) + batch[:, :1])
    assert quantized == plain
