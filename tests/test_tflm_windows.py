"""Windowed inference of the TFLM build (firmware_export.device.windows): how a clip is split into
windows, how the window is chosen from --tflm-window-seconds, and how the windows' logits pool.
numpy only; the end-to-end windowed build is in test_tflm_build.py."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from firmware_export.device.windows import (
    describe,
    pool,
    split_windows,
    window_samples,
    window_starts,
)


def test_a_clip_of_exactly_n_windows_is_split_end_to_end_without_overlap():
    clip = np.arange(12, dtype=np.float32)
    assert window_starts(12, 4) == [0, 4, 8]
    windows = split_windows(clip, 4)
    assert windows.shape == (3, 4)
    assert np.array_equal(windows.reshape(-1), clip)


def test_a_remainder_gets_one_last_window_ending_at_the_clips_end():
    clip = np.arange(10, dtype=np.float32)
    assert window_starts(10, 4) == [0, 4, 6]
    windows = split_windows(clip, 4)
    assert np.array_equal(windows[-1], clip[6:])  # overlaps the window before by 2 samples
    assert set(windows.reshape(-1).tolist()) == set(clip.tolist())  # every sample seen


def test_a_clip_shorter_than_one_window_is_zero_padded_at_its_end():
    windows = split_windows(np.array([1, 2, 3], dtype=np.float32), 5)
    assert windows.tolist() == [[1, 2, 3, 0, 0]]
    assert window_starts(5, 5) == [0]


def test_pooling_is_the_mean_of_the_windows_logits():
    logits = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -0.5], [-1.0, 2.0, 3.0]])
    assert np.allclose(pool(logits), [1.0, 0.0, 1.0])
    assert np.array_equal(pool(logits[:1]), logits[0])  # one window: its own logits


@pytest.mark.parametrize("clip, seconds, expected", [
    (5 * 44100, None, 44100),  # auto: 1 s windows for a clip longer than 1 s
    (44100, None, 44100),  # auto on a 1 s clip: the whole clip
    (8000, None, 8000),  # 1 s at 8 kHz
    (5 * 44100, 0, 5 * 44100),  # 0: the whole clip
    (5 * 44100, 2.5, 110250),
    (44100, 3.0, 44100),  # capped at the clip
])
def test_the_window_follows_the_option(clip, seconds, expected):
    rate = 8000 if clip == 8000 else 44100
    assert window_samples(clip, rate, seconds, min_samples=1024) == expected


def test_a_window_shorter_than_the_fft_or_negative_is_a_one_line_error():
    with pytest.raises(EdgeclError, match=r"--tflm-window-seconds: a window of 0.01 s is 441 "
                                          r"samples at 44100 Hz, shorter than the front end's "
                                          r"FFT \(1024 samples\)"):
        window_samples(44100 * 5, 44100, 0.01, min_samples=1024)
    with pytest.raises(EdgeclError, match="--tflm-window-seconds: expected a length"):
        window_samples(44100 * 5, 44100, -1.0)


def test_the_manifest_record_names_the_windows_and_the_rule():
    record = describe(44100, 5 * 44100, 44100, None)
    assert record["per_clip"] == 5 and record["seconds"] == 1.0
    assert record["starts"] == [0, 44100, 88200, 132300, 176400]
    assert record["rule"] == "auto" and "mean" in record["pooling"]
    assert describe(220500, 220500, 44100, 0)["rule"] == "whole clip"


def test_the_option_is_in_a_runs_identity_only_when_set_and_needs_target_tflm():
    assert "tflm_window_seconds" not in RunConfig(target="tflm").identity()
    windowed = RunConfig(target="tflm", tflm_window_seconds=1.0)
    assert windowed.identity()["tflm_window_seconds"] == 1.0
    assert RunConfig.from_dict(windowed.to_dict()).tflm_window_seconds == 1.0
    with pytest.raises(EdgeclError, match="--tflm-window-seconds: only used with --target tflm"):
        RunConfig(tflm_window_seconds=1.0)
    with pytest.raises(EdgeclError, match="--tflm-window-seconds: expected a window length"):
        RunConfig(target="tflm", tflm_window_seconds=-1.0)


@pytest.mark.parametrize("extra, message", [
    ([], "--tflm-window-seconds: only used with --target tflm (the export's target is onnx)"),
    (["--target", "tflm", "--tflm-window-seconds", "-1"],
     "--tflm-window-seconds: expected a window length in seconds (0 = whole clip) in [0, 600]"),
])
def test_export_window_errors_are_one_line_and_write_nothing(tmp_path, extra, message):
    from click.testing import CliRunner
    from export_helpers import trained_model
    from test_export import _write_tone_run

    from edgecl.cli import main

    run, _ = _write_tone_run(tmp_path, trained_model())
    def files():  # the run's lock file is bookkeeping, left by every export
        return sorted(p.name for p in run.rglob("*") if p.name != ".lock")

    before = files()
    arguments = ["export", str(run), *(extra or ["--tflm-window-seconds", "1"])]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1
    assert files() == before
