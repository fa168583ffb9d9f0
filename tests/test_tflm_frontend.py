"""The TFLM build's graph rewrites and front ends, without the converter stack: SubSpectralNorm
folded into per-band depthwise convs, the reflect padding as a fixed gather, the numpy front end
and the generated C99 front end (compiled with the system compiler) against the model's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from c_frontend_harness import build, run

import models
from firmware_export.device.logmel import LogMelPlan, logmel, quantize, reflect_indices
from firmware_export.tflm.c_frontend import render_frontend
from firmware_export.tflm.rewrite import (
    BandedFrequencyConv,
    LogmelClassifier,
    fold_subspectral_norms,
    tflm_graph,
)
from models.bcresnet import SubSpectralNorm


def _model_with_distinct_band_statistics(width: int = 8, n_classes: int = 5):
    """A BC-ResNet whose SubSpectralNorms have different statistics and affine terms per band,
    so a fold that mixed up bands or channels would show."""
    torch.manual_seed(0)
    model = models.build_model("bc-resnet", n_classes, models.FrontEndConfig.for_sample_rate(8000),
                               width=width)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, SubSpectralNorm):
            bn, size = module.bn, module.bn.num_features
            bn.running_mean.copy_(torch.randn(size, generator=generator))
            bn.running_var.copy_(torch.rand(size, generator=generator) * 3 + 0.1)
            bn.weight.data.copy_(torch.randn(size, generator=generator))
            bn.bias.data.copy_(torch.randn(size, generator=generator))
    return model.eval()


def test_subspectral_norm_folded_per_band_matches_the_model_in_float():
    model = _model_with_distinct_band_statistics()
    logmels = torch.randn(3, 1, 64, 51, generator=torch.Generator().manual_seed(2)) * 3
    graph = tflm_graph(model)
    assert not any(isinstance(m, SubSpectralNorm) for m in graph.modules())
    with torch.no_grad():
        expected = LogmelClassifier(model)(logmels)
        got = graph(logmels)
    assert expected.abs().max() > 0.1  # a real signal, not all zeros
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


def test_every_frequency_branch_is_folded_and_the_source_model_is_untouched():
    model = _model_with_distinct_band_statistics()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    graph = tflm_graph(model)
    n_norms = sum(isinstance(m, SubSpectralNorm) for m in model.modules())
    assert n_norms == 9
    assert sum(isinstance(m, BandedFrequencyConv) for m in graph.modules()) == n_norms
    assert fold_subspectral_norms(graph) == 0  # nothing left to fold
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


@pytest.mark.parametrize("n_samples,half", [(10, 4), (300, 128), (5, 0)])
def test_reflect_padding_as_a_gather_equals_numpy_reflect_padding(n_samples, half):
    clip = np.arange(n_samples, dtype=np.float64) ** 2
    assert np.array_equal(clip[reflect_indices(n_samples, half)],
                          np.pad(clip, half, mode="reflect"))


def test_reflect_padding_longer_than_the_clip_is_refused():
    with pytest.raises(ValueError, match="longer"):
        reflect_indices(4, 4)


@pytest.mark.parametrize("sample_rate", [8000, 44100])
def test_numpy_front_end_matches_the_model_front_end(sample_rate):
    config = models.FrontEndConfig.for_sample_rate(sample_rate)
    n_samples = sample_rate // 4
    rng = np.random.default_rng(0)
    clips = (0.3 * rng.standard_normal((3, n_samples))).astype(np.float32)
    clips[1] *= 1e-3  # a quiet clip: the log's floor region
    with torch.no_grad():
        expected = models.LogMelFrontEnd(config)(torch.from_numpy(clips))[:, 0].numpy()
    plan = LogMelPlan.from_config(config.to_dict(), n_samples)
    got = np.stack([logmel(plan, clip) for clip in clips])
    assert got.shape == expected.shape
    # The model's front end is a float32 conv: its own rounding sets the bound.
    assert np.abs(got - expected).max() < 1e-3


def test_quantize_rounds_half_away_from_zero_and_clamps():
    values = np.array([0.5, -0.5, 1.49, 1000.0, -1000.0, 0.0], dtype=np.float32)
    assert quantize(values, 1.0, 0).tolist() == [1, -1, 1, 127, -128, 0]
    assert quantize(np.array([0.25], np.float32), 0.5, -3).tolist() == [-2]


def _fsdd_clips(manifest, sample_rate: int, n_samples: int, count: int = 4) -> np.ndarray:
    import csv

    from edgecl.audio import load_audio

    with open(manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    picked = [rows[i] for i in np.linspace(0, len(rows) - 1, count).astype(int)]
    return np.stack([load_audio(manifest.parent / row["path"], sample_rate, n_samples)
                     for row in picked])


def test_c_front_end_matches_the_model_front_end_on_real_clips(fsdd_manifest, tmp_path):
    config = models.FrontEndConfig.for_sample_rate(8000)
    n_samples = 8000
    clips = _fsdd_clips(fsdd_manifest, 8000, n_samples)
    plan = LogMelPlan.from_config(config.to_dict(), n_samples)
    binary = build(tmp_path, *render_frontend(plan))
    got = run(binary, clips, plan.n_mels, plan.n_frames)
    with torch.no_grad():
        expected = models.LogMelFrontEnd(config)(torch.from_numpy(clips))[:, 0].numpy()
    twin = np.stack([logmel(plan, clip) for clip in clips])
    assert np.ptp(expected) > 10  # real speech: many decades of energy
    # float32 rounding of two different summation orders (measured: max 1.3e-4, mean 1e-6)
    assert np.abs(got - expected).max() < 1e-3
    assert np.abs(got - expected).mean() < 1e-5
    assert np.abs(got - twin).max() < 1e-3


def _logmel_as_first_written(plan: LogMelPlan, waveform: np.ndarray) -> np.ndarray:
    """The numpy front end before its constants were kept on the plan and its products held to
    one BLAS thread: the reference the kept form must equal bit for bit."""
    clip = np.asarray(waveform, dtype=np.float64).reshape(-1)
    padded = clip[reflect_indices(len(clip), plan.n_fft // 2)]
    starts = np.arange(plan.n_frames) * plan.hop_length
    frames = padded[starts[:, None] + np.arange(plan.n_fft)[None, :]]
    cos_rows, sin_rows = plan.dft_basis()
    power = (frames @ cos_rows.T) ** 2 + (frames @ sin_rows.T) ** 2
    mel = plan.filterbank @ power.T
    return np.log(mel + 1e-6).astype(np.float32)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100])
def test_numpy_front_end_equals_its_first_form_bit_for_bit_on_noise(sample_rate):
    plan = LogMelPlan.from_config(models.FrontEndConfig.for_sample_rate(sample_rate).to_dict(),
                                  sample_rate)
    rng = np.random.default_rng(sample_rate)
    clips = (rng.standard_normal((6, sample_rate)) * [[0.3], [1e-3], [1e-5], [0.0], [1.0], [0.05]]
             ).astype(np.float32)
    clips[5, ::7] = 0.9  # clicks: a wide spread of bin energies
    for clip in clips:
        assert logmel(plan, clip).tobytes() == _logmel_as_first_written(plan, clip).tobytes()


@pytest.mark.parametrize("sample_rate", [8000, 44100])
def test_numpy_front_end_equals_its_first_form_bit_for_bit_on_real_clips(fsdd_manifest,
                                                                         sample_rate):
    clips = _fsdd_clips(fsdd_manifest, sample_rate, sample_rate, count=6)
    plan = LogMelPlan.from_config(models.FrontEndConfig.for_sample_rate(sample_rate).to_dict(),
                                  sample_rate)
    for clip in clips:
        assert logmel(plan, clip).tobytes() == _logmel_as_first_written(plan, clip).tobytes()
