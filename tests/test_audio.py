"""Audio loading: formats and bit depths, mono mix, resampling, crop/pad, and every bad file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fixtures_audio import fixture_signal, write_wav

from edgecl.audio import audio_info, fit_length, load_audio, read_audio
from edgecl.errors import EdgeclError


@pytest.mark.parametrize("fmt, subtype, tolerance", [
    ("wav", "PCM_16", 1 / 2 ** 15),
    ("wav", "PCM_24", 1 / 2 ** 23),
    ("wav", "FLOAT", 1e-7),
    ("flac", "PCM_16", 1 / 2 ** 15),
    ("flac", "PCM_24", 1 / 2 ** 23),
])
def test_lossless_formats_load_exactly(tmp_path, fmt, subtype, tolerance):
    signal = fixture_signal(4000, seed=1)
    path = write_wav(tmp_path / f"clip.{fmt}", signal, 16000, subtype)
    loaded = load_audio(path, 16000)
    assert loaded.dtype == np.float32 and loaded.shape == signal.shape
    np.testing.assert_allclose(loaded, signal, atol=tolerance)


def test_ogg_vorbis_loads_close_to_the_original(tmp_path):
    signal = fixture_signal(16000, seed=2)
    path = write_wav(tmp_path / "clip.ogg", signal, 16000, "VORBIS")
    loaded = load_audio(path, 16000, 16000)
    assert loaded.dtype == np.float32 and loaded.shape == (16000,)
    # Lossy: compare energy and correlation, not samples.
    assert np.corrcoef(loaded, signal)[0, 1] > 0.9


def test_24bit_stereo_is_read_per_channel_and_mixed_to_mono(tmp_path):
    stereo = fixture_signal(4800, seed=3, channels=2)
    path = write_wav(tmp_path / "scene.wav", stereo, 48000, "PCM_24")
    samples, rate = read_audio(path)
    assert rate == 48000 and samples.shape == (2, 4800) and samples.dtype == np.float32
    np.testing.assert_allclose(samples, stereo.T, atol=1 / 2 ** 23)
    mono = load_audio(path, 48000)
    np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=1 / 2 ** 23)


def test_resampling_changes_length_and_keeps_the_pitch(tmp_path):
    t = np.arange(8000) / 8000
    path = write_wav(tmp_path / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
                     8000, "FLOAT")
    loaded = load_audio(path, 16000)
    assert loaded.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(loaded))
    peak_hz = np.argmax(spectrum) * 16000 / loaded.size
    assert abs(peak_hz - 440) <= 2
    assert abs(np.max(np.abs(loaded[1000:-1000])) - 0.5) < 0.02


def test_clip_length_crops_the_end_or_zero_pads_it(tmp_path):
    signal = fixture_signal(1000, seed=4)
    path = write_wav(tmp_path / "short.wav", signal, 8000, "FLOAT")
    cropped = load_audio(path, 8000, 600)
    np.testing.assert_array_equal(cropped, signal[:600])
    padded = load_audio(path, 8000, 1500)
    assert padded.shape == (1500,)
    np.testing.assert_array_equal(padded[:1000], signal)
    assert not padded[1000:].any()
    assert fit_length(np.ones((2, 5), np.float32), 3).shape == (2, 3)


def test_float_files_beyond_full_scale_are_clipped(tmp_path):
    path = write_wav(tmp_path / "loud.wav", np.array([2.0, -3.0, 0.5], np.float32), 8000, "FLOAT")
    np.testing.assert_array_equal(load_audio(path, 8000), [1.0, -1.0, 0.5])


def test_audio_info_reads_the_header(tmp_path):
    path = write_wav(tmp_path / "x.wav", fixture_signal(2400, seed=5, channels=2), 48000, "PCM_24")
    info = audio_info(path)
    assert (info.sample_rate, info.frames, info.channels) == (48000, 2400, 2)


def _bad_files(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all " * 20)
    empty_file = tmp_path / "empty_file.wav"
    empty_file.write_bytes(b"")
    good = write_wav(tmp_path / "good.wav", fixture_signal(2000, seed=6), 8000)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    no_samples = write_wav(tmp_path / "no_samples.wav", np.zeros(0, np.float32), 8000)
    with_nan = fixture_signal(100, seed=7)
    with_nan[10] = np.nan
    with_inf = fixture_signal(100, seed=8)
    with_inf[20] = np.inf
    return {
        "missing": (tmp_path / "missing.wav", "not found"),
        "folder": (tmp_path, "expected an audio file"),
        "garbage": (garbage, "unreadable or corrupt"),
        "empty file": (empty_file, "unreadable or corrupt"),
        "truncated header": (truncated, "unreadable or corrupt"),
        "zero samples": (no_samples, "zero samples"),
        "nan": (write_wav(tmp_path / "nan.wav", with_nan, 8000, "FLOAT"), "NaN or Inf"),
        "inf": (write_wav(tmp_path / "inf.wav", with_inf, 8000, "FLOAT"), "NaN or Inf"),
    }


@pytest.mark.parametrize("case", ["missing", "folder", "garbage", "empty file",
                                  "truncated header", "zero samples", "nan", "inf"])
def test_every_bad_file_is_one_line_naming_the_file(tmp_path, case):
    path, expected = _bad_files(tmp_path)[case]
    for load in (lambda: load_audio(path, 8000, 800), lambda: read_audio(path)):
        with pytest.raises(EdgeclError) as caught:
            load()
        message = str(caught.value)
        assert str(path) in message and expected in message
        assert "\n" not in message


def test_header_errors_from_audio_info_name_the_file(tmp_path):
    path, _ = _bad_files(tmp_path)["garbage"]
    with pytest.raises(EdgeclError, match="garbage.wav: unreadable or corrupt"):
        audio_info(path)


def test_bad_sample_rate_is_an_error(tmp_path):
    path = write_wav(tmp_path / "x.wav", fixture_signal(100, seed=9), 8000)
    with pytest.raises(EdgeclError, match="sample rate"):
        load_audio(path, 0)


def test_reading_at_the_native_rate_does_not_import_torch(tmp_path):
    # firmware_export's runtime reads audio on machines without torch.
    path = write_wav(tmp_path / "x.wav", fixture_signal(800, seed=10), 8000)
    code = ("import sys; from edgecl.audio import load_audio; "
            f"x = load_audio({str(path)!r}, 8000, 1000); "
            "assert x.shape == (1000,); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
