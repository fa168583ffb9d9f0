"""What bounds the export's memory: the per-stage peaks it reports (StagePeaks), the clips loaded
without a second copy, and the windowed fp32 reference computed batch by batch; and its CPU
seconds, child processes included."""

from __future__ import annotations

import mmap
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from export_helpers import (
    one_thread,  # noqa: F401 (module-wide fixture)
    tones,
    trained_model,
)

from edgecl.budget.ram import StagePeaks, rss_stage
from firmware_export import parity
from firmware_export.held_clips import SCALE
from firmware_export.run_export import process_tree_cpu_seconds, seen_clips
from firmware_export.tflm.build import all_windows, windowed_fp32


def test_stage_peaks_credit_each_stage_with_its_own_peak():
    with StagePeaks() as peaks:
        rss_stage("small")
        small = np.ones(1000)
        rss_stage("large")
        # 300 MiB mapped apart and touched, then unmapped: back to the system whatever malloc
        # settings earlier tests left in this process (edgecl.allocator keeps freed heap)
        large = mmap.mmap(-1, 300 * 2**20)
        pages = np.frombuffer(large, dtype=np.uint8)
        pages[:] = 1
        del pages
        large.close()
        rss_stage("small again")
        del small
    if not peaks.scoped:
        pytest.skip("no resettable high-water mark here")
    names = [stage["stage"] for stage in peaks.stages]
    assert names == ["start", "small", "large", "small again"]
    by_name = {stage["stage"]: stage["peak_rss_bytes"] for stage in peaks.stages}
    assert by_name["large"] - by_name["small"] > 250 * 2**20
    assert by_name["large"] - by_name["small again"] > 250 * 2**20
    assert peaks.bytes == by_name["large"] and peaks.highest()["stage"] == "large"
    rss_stage("after the block")  # no active trace: nothing recorded
    assert len(peaks.stages) == 4


def test_a_stage_marked_twice_in_a_row_is_one_stage():
    with StagePeaks() as peaks:
        rss_stage("same")
        rss_stage("same")
    assert [stage["stage"] for stage in peaks.stages] == ["start", "same"]


def test_calibration_and_held_out_clips_are_held_as_codes_and_hand_out_the_decoded_bytes():
    """16-bit clips: both sets held as int16 codes (half the bytes), every clip handed out as the
    float32 bytes it was decoded to."""
    codes = np.random.default_rng(5).integers(-32768, 32767, size=(7, 400), dtype=np.int16)
    decoded = codes.astype(np.float32) / SCALE
    task = SimpleNamespace(train=[SimpleNamespace(clip=i, target=0) for i in range(4)],
                           val=[SimpleNamespace(clip=4, target=0)],
                           test=[SimpleNamespace(clip=i, target=0) for i in (5, 6)])
    clips = seen_clips([task], lambda index: decoded[index], phase=0)
    for name, rows in (("calibration_waveforms", [0, 1, 2, 3]), ("holdout_waveforms", [4, 5, 6])):
        held = clips[name]
        assert held.nbytes_held == len(rows) * 400 * 2
        assert np.asarray(held).tobytes() == decoded[rows].tobytes()


def test_windowed_fp32_batch_by_batch_equals_all_windows_at_once():
    """Batches of LARGE_BATCH windows that straddle clips give the logits of all windows cut
    at once, bit for bit."""
    model = trained_model()
    clips, _ = tones(9, seed=4)
    window = 700  # 6 windows a clip, 54 in all: batches of 32 cut clips
    per_clip = len(all_windows(clips[:1], window))
    assert parity.LARGE_BATCH % per_clip != 0
    everything = parity.batched(parity.torch_runner(model), all_windows(clips, window),
                                parity.LARGE_BATCH).reshape(len(clips), per_clip, -1)
    from firmware_export.device.windows import pool

    expected = np.stack([pool(part) for part in everything])
    assert np.array_equal(windowed_fp32(model, clips, window), expected)


def test_a_phase_s_cpu_seconds_count_its_ended_child_processes():
    before, own_before = process_tree_cpu_seconds(), time.process_time()
    # a child that spends at least 0.5 s of its own CPU, then ends (os.times counts clock ticks)
    subprocess.run([sys.executable, "-c", "import time\nwhile time.process_time() < 0.5: pass"],
                   check=True)
    assert process_tree_cpu_seconds() - before >= 0.4
    assert time.process_time() - own_before < 0.2  # this process alone spent far less
