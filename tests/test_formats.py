"""Exemplar storage formats: round-trip error bounds, honest byte counts, device records, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl.errors import EdgeclError
from edgecl.memory.formats import FORMAT_NAMES, MU, get_format, mulaw_compress, mulaw_expand

WAVEFORM_FORMATS = ("float32", "pcm16", "mulaw8")


def _audio(seed: int, n: int) -> np.ndarray:
    """Audio-like samples spanning quiet and loud amplitudes, including the exact extremes."""
    rng = np.random.default_rng(seed)
    samples = rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-4, 0, n)
    samples[:3] = [-1.0, 0.0, 1.0][: min(3, n)]
    return samples.astype(np.float32)


def test_format_names_and_domains():
    assert set(FORMAT_NAMES) == {"float32", "pcm16", "mulaw8", "logmel8"}
    assert [get_format(name).domain for name in WAVEFORM_FORMATS] == ["waveform"] * 3
    assert get_format("logmel8").domain == "logmel"


def test_float32_round_trip_is_exact():
    audio = _audio(0, 4000)
    fmt = get_format("float32")
    decoded = fmt.decode(fmt.encode(audio))
    assert decoded.dtype == np.float32 and np.array_equal(decoded, audio)


def test_float32_decode_returns_a_copy_the_caller_may_modify():
    fmt = get_format("float32")
    encoded = fmt.encode(_audio(1, 100))
    fmt.decode(encoded)[:] = 0.5
    assert not np.all(fmt.decode(encoded) == 0.5)


def test_pcm16_round_trip_within_one_lsb():
    audio = _audio(2, 20000)
    fmt = get_format("pcm16")
    encoded = fmt.encode(audio)
    assert encoded.payload.dtype == np.int16
    assert np.abs(fmt.decode(encoded) - audio).max() <= 1 / 32768


def test_waveform_formats_clip_to_unit_range():
    audio = np.array([-3.0, -1.0, 1.0, 2.5], dtype=np.float32)
    for name in ("pcm16", "mulaw8"):
        fmt = get_format(name)
        np.testing.assert_allclose(fmt.decode(fmt.encode(audio)), [-1, -1, 1, 1], atol=1e-6)


def test_mulaw8_round_trip_within_half_a_step_at_each_amplitude():
    audio = _audio(3, 20000).astype(np.float64)
    fmt = get_format("mulaw8")
    decoded = fmt.decode(fmt.encode(audio.astype(np.float32))).astype(np.float64)
    # Codes are spaced 2/MU apart in the companded domain, so the decoded value is the centre of a
    # cell of half-width 1/MU there; in amplitude the cell's outer half is the larger one.
    companded = np.abs(mulaw_compress(decoded))
    half_step = mulaw_expand(np.minimum(companded + 1 / MU, 1.0)) - mulaw_expand(companded)
    error = np.abs(decoded - audio)
    assert np.all(error <= half_step + 1e-7)
    # The bound really depends on amplitude: loud samples are quantised far more coarsely.
    loud, quiet = np.abs(audio) > 0.5, np.abs(audio) < 0.01
    assert error[loud].max() > 20 * error[quiet].max()


def test_mulaw8_matches_torchaudio():
    audio = _audio(4, 20000)
    fmt = get_format("mulaw8")
    encoded = fmt.encode(audio)
    reference = AF.mu_law_encoding(torch.from_numpy(audio), MU + 1).numpy()
    # float32 (torch) against float64 (here) may put a sample that sits on a cell edge in the
    # neighbouring cell; anything else would be a different code assignment.
    diff = np.abs(encoded.payload.astype(int) - reference)
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.999
    torch_decoded = AF.mu_law_decoding(torch.from_numpy(encoded.payload.astype(np.int64)), MU + 1)
    np.testing.assert_allclose(fmt.decode(encoded), torch_decoded.numpy(), atol=1e-6)


def test_logmel8_round_trip_within_half_a_step():
    rng = np.random.default_rng(5)
    logmel = rng.normal(-6, 4, (1, 64, 101)).astype(np.float32)
    fmt = get_format("logmel8")
    encoded = fmt.encode(logmel)
    assert encoded.payload.dtype == np.uint8
    assert encoded.offset == pytest.approx(logmel.min())
    assert encoded.scale == pytest.approx((logmel.max() - logmel.min()) / 255, rel=1e-6)
    decoded = fmt.decode(encoded)
    assert decoded.shape == logmel.shape
    assert np.abs(decoded - logmel).max() <= encoded.scale / 2 * (1 + 1e-4)
    # Both extremes are representable: code 0 and code 255 are used.
    assert encoded.payload.min() == 0 and encoded.payload.max() == 255


def test_logmel8_constant_features_decode_exactly():
    fmt = get_format("logmel8")
    constant = np.full((1, 8, 5), -11.5, dtype=np.float32)
    assert np.array_equal(fmt.decode(fmt.encode(constant)), constant)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(FORMAT_NAMES), n=st.integers(1, 3000), seed=st.integers(0, 2**16),
       target=st.integers(0, 0xFFFF))
def test_byte_count_is_the_size_of_the_device_record(name, n, seed, target):
    fmt = get_format(name)
    shape = (n,) if fmt.domain == "waveform" else (1, 4, max(1, n // 4))
    array = _audio(seed, int(np.prod(shape))).reshape(shape) * (20 if name == "logmel8" else 1)
    encoded = fmt.encode(array)
    record = encoded.to_bytes(target)
    assert fmt.nbytes(shape) == encoded.nbytes == len(record)
    read_target, decoded = fmt.decode_bytes(record)
    assert read_target == target
    assert np.array_equal(decoded, fmt.decode(encoded))


def test_documented_sizes_of_a_one_second_8khz_clip():
    # header: uint16 target + uint16 ndim + uint32 per dim (+ float32 scale and offset for logmel8)
    assert get_format("float32").nbytes((8000,)) == 8 + 32000
    assert get_format("pcm16").nbytes((8000,)) == 8 + 16000
    assert get_format("mulaw8").nbytes((8000,)) == 8 + 8000
    assert get_format("logmel8").nbytes((1, 64, 101)) == 4 + 12 + 8 + 64 * 101


def test_bad_inputs_are_clear_errors():
    with pytest.raises(EdgeclError, match="--memory-format: expected one of float32"):
        get_format("mp3")
    fmt = get_format("pcm16")
    with pytest.raises(EdgeclError, match="finite"):
        fmt.encode(np.array([0.1, np.nan], dtype=np.float32))
    with pytest.raises(EdgeclError, match="float array"):
        fmt.encode(np.array([1, 2, 3]))
    with pytest.raises(EdgeclError, match="cannot decode a mulaw8"):
        fmt.decode(get_format("mulaw8").encode(np.zeros(4, dtype=np.float32)))
    with pytest.raises(EdgeclError, match="target"):
        fmt.encode(np.zeros(4, dtype=np.float32)).to_bytes(70000)
