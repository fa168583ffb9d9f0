"""How many passes a phase's export makes over its held-out clips: the fp32 model's logits on a
batch are computed once and reused by every later check (the int8 search, the embedding check,
both TFLM builds), the TFLM builds share their fp32 references, and the analytic fit embeds its
clips in batches of EMBED_BATCH."""

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


class _Counting:
    """A runner that counts the clips and batches it computes: `run`'s logits, by default a
    fixed function of each clip (so any batching gives the same rows)."""

    def __init__(self, run: parity.Runner | None = None) -> None:
        self.clips = 0
        self.batches: list[int] = []
        self.run = run or (lambda batch: np.stack([[clip.mean(), clip.std(), clip.max()]
                                                   for clip in batch]))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.clips += len(batch)
        self.batches.append(len(batch))
        return self.run(batch)


def test_the_memo_runner_computes_each_batch_once_and_returns_the_same_logits():
    clips, _ = tones(10, seed=1)
    counting = _Counting()
    memo = parity.MemoRunner(counting)
    plain = parity.batched(_Counting(), clips, 1)
    first = parity.batched(memo, clips, 1)
    again = parity.batched(memo, clips[::-1], 1)  # the same clips in another order
    assert np.array_equal(first, plain) and np.array_equal(again, plain[::-1])
    assert memo.runs == counting.clips == 10
    by_four = parity.batched(memo, clips, 4)
    parity.batched(memo, clips, 4)
    assert np.array_equal(by_four, plain)
    assert memo.runs == 13 and counting.batches[10:] == [4, 4, 2]
    changed = clips.copy()
    changed[0, 0] += 1e-3  # one sample differs: a new batch, computed
    parity.batched(memo, changed[:1], 1)
    assert memo.runs == 14


def test_a_returned_batch_cannot_change_what_is_kept():
    clips, _ = tones(2, seed=1)
    memo = parity.MemoRunner(_Counting())
    logits = memo(clips[:1])
    logits[:] = 0
    assert not np.array_equal(memo(clips[:1]), logits)


def test_the_embedding_check_reuses_the_fp32_checks_batches():
    """After the fp32 check (parity.measure at batch 1 and 32), the embedding model's check asks
    the fp32 runner for no new batch."""
    from firmware_export.bundle import _embedding_model
    from firmware_export.device.runtime import cpu_session
    from firmware_export.export import export_onnx, serialize

    model = trained_model()
    clips, targets = tones(40, seed=5)  # 40 clips: batches of 32 and 8
    fp32 = export_onnx(model, labels=CLASSES, sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES)
    runner = parity.MemoRunner(parity.ort_runner(cpu_session(serialize(fp32))))
    parity.measure(parity.torch_runner(model), runner, clips, targets)
    runs = runner.runs
    assert runs == 40 + 2
    _, section, held = _embedding_model(fp32, runner, clips, phase=0)
    assert runner.runs == runs
    assert held.shape == (40, section["dim"]) and section["max_abs_logit_diff"] <= 1e-4


class _Micro:
    """A stand-in TFLM model: a window's log-mel to four scores."""

    def run_logmel(self, features: np.ndarray) -> np.ndarray:
        return np.array([features.mean(), features.std(), features.max(), features.min()])


def test_both_tflm_builds_share_one_pass_of_each_fp32_reference(monkeypatch):
    pytest.importorskip("tflite_micro", reason="the tflm extra is not installed")
    from firmware_export.device.logmel import LogMelPlan
    from firmware_export.tflm import build

    model = trained_model()
    clips, targets = tones(6, seed=2)
    window = CLIP_SAMPLES // 4
    plan = LogMelPlan.from_config(model.frontend.config.to_dict(), window)
    counting = _Counting(parity.torch_runner(model))
    windowed_calls = []
    real_windowed = build.windowed_fp32

    def windowed(model, waveforms, size):
        windowed_calls.append(size)
        return real_windowed(model, waveforms, size)

    monkeypatch.setattr(build, "windowed_fp32", windowed)
    references = build.Fp32References(model, counting, clips)
    logmels = build.WindowLogMels(plan)
    records = [{}, {}]
    for record, name in zip(records, ["TFLM build", "TFLM embedding build"], strict=True):
        build.device_parity(_Micro(), logmels, references, targets, CLIP_SAMPLES, record, name)
    assert references.passes == 2 and windowed_calls == [window]
    assert counting.clips == len(clips) and counting.batches == [1] * len(clips)
    assert records[0] == records[1] and "tflm_vs_fp32_windowed" in records[0]
    assert logmels.computed == 4 * len(clips)  # each window's log-mel once for both checks


def test_kept_log_mels_are_the_front_ends():
    pytest.importorskip("tflite_micro", reason="the tflm extra is not installed")
    from firmware_export.device.logmel import LogMelPlan, logmel
    from firmware_export.tflm.build import WindowLogMels, all_windows

    plan = LogMelPlan.from_config(trained_model().frontend.config.to_dict(), CLIP_SAMPLES // 4)
    clips, _ = tones(3, seed=7)
    windows = all_windows(clips, plan.clip_samples)
    logmels = WindowLogMels(plan)
    for window in [*windows, *windows[::-1]]:
        assert np.array_equal(logmels(window), logmel(plan, window))
    assert logmels.computed == len(windows)


def test_the_analytic_fit_embeds_in_batches_of_embed_batch():
    from firmware_export.device import learn

    class Session:
        def __init__(self) -> None:
            self.batches: list[int] = []

        def run(self, outputs, feeds):
            batch = next(iter(feeds.values()))
            self.batches.append(len(batch))
            return [batch[:, :3] * 2]

    clips, _ = tones(2 * learn.EMBED_BATCH + 3, seed=3)
    session = Session()
    embeddings = learn.embed_batches(session, list(range(len(clips))), lambda i: clips[i])
    assert session.batches == [learn.EMBED_BATCH, learn.EMBED_BATCH, 3]
    assert np.array_equal(embeddings, (clips[:, :3] * 2).astype(np.float32))


def test_the_calibration_clips_are_not_copied_when_all_are_used():
    from firmware_export.bundle import MAX_CALIBRATION_CLIPS, _checked_clips

    holdout, targets = tones(4, seed=6)
    few = np.zeros((MAX_CALIBRATION_CLIPS, holdout.shape[1]), np.float32)
    calibration, _, _ = _checked_clips(0, CLASSES, few, holdout, targets)
    assert calibration is few
    many = np.arange(MAX_CALIBRATION_CLIPS + 3, dtype=np.float32)[:, None].repeat(
        holdout.shape[1], axis=1)
    calibration, _, _ = _checked_clips(0, CLASSES, many, holdout, targets)
    assert len(calibration) == MAX_CALIBRATION_CLIPS and calibration[-1, 0] == len(many) - 1
