"""Log-mel front end: defaults, config round trip, parity with torchaudio, ONNX export parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio

from edgecl.errors import EdgeclError
from models.frontend import FrontEndConfig, LogMelFrontEnd

# One thread: on a shared 2-core machine OpenMP spin-waiting makes 2 threads 10x slower.


def test_published_defaults_per_sample_rate():
    expected = {44100: (1024, 320, 50, 14000), 48000: (1024, 320, 50, 14000),
                16000: (512, 160, 20, 8000), 8000: (256, 80, 20, 4000)}
    for rate, (n_fft, hop, f_min, f_max) in expected.items():
        config = FrontEndConfig.for_sample_rate(rate)
        assert (config.n_fft, config.hop_length, config.f_min, config.f_max, config.n_mels) == (
            n_fft, hop, f_min, f_max, 64)


def test_other_rates_scale_window_hop_and_band():
    config = FrontEndConfig.for_sample_rate(22050)
    assert (config.n_fft, config.hop_length, config.f_max) == (512, 220, 11025)
    config = FrontEndConfig.for_sample_rate(32000)
    assert (config.n_fft, config.hop_length, config.f_max) == (1024, 320, 14000)


def test_config_round_trips_through_dict_and_rejects_bad_values():
    config = FrontEndConfig.for_sample_rate(16000)
    assert FrontEndConfig.from_dict(config.to_dict()) == config
    with pytest.raises(EdgeclError, match="missing keys"):
        FrontEndConfig.from_dict({"sample_rate": 8000})
    with pytest.raises(EdgeclError, match="f_max"):
        FrontEndConfig(sample_rate=8000, n_fft=256, hop_length=80, f_min=20, f_max=5000)
    with pytest.raises(EdgeclError, match="stft_impl"):
        LogMelFrontEnd(config, stft_impl="fft")
    with pytest.raises(EdgeclError, match="longer than"):
        LogMelFrontEnd(config)(torch.zeros(1, config.n_fft // 2))


@pytest.mark.parametrize("rate,samples", [(8000, 8000), (44100, 22050)])
def test_shape_and_no_trainable_parameters(rate, samples):
    config = FrontEndConfig.for_sample_rate(rate)
    front_end = LogMelFrontEnd(config)
    out = front_end(torch.randn(3, samples))
    assert out.shape == (3, 1, 64, samples // config.hop_length + 1)
    assert config.n_frames(samples) == out.shape[-1]
    assert list(front_end.parameters()) == []
    assert len(list(front_end.buffers())) == 2


def _test_signal(rate: int, samples: int) -> torch.Tensor:
    """Two clips: a chirp with quiet noise, and a tone that starts half way (silence first)."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(samples, dtype=torch.float64) / rate
    chirp = 0.5 * torch.sin(2 * math.pi * (100 * t + 0.25 * rate * t * t / t[-1]))
    chirp = chirp + 0.01 * torch.randn(samples, generator=generator, dtype=torch.float64)
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t) * (t > t[-1] / 2)
    return torch.stack([chirp, tone]).float()


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_conv_front_end_matches_torchaudio_melspectrogram(rate):
    config = FrontEndConfig.for_sample_rate(rate)
    wave = _test_signal(rate, rate // 2)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=rate, n_fft=config.n_fft, hop_length=config.hop_length, f_min=config.f_min,
        f_max=config.f_max, n_mels=config.n_mels, power=2.0, center=True, pad_mode="reflect")
    expected = torch.log(reference(wave) + 1e-6)
    difference = torch.abs(LogMelFrontEnd(config)(wave)[:, 0] - expected)
    # float32 rounding of the DFT kernels shows only in near-silent leakage bins (log of ~1e-6).
    assert difference.max() < 2e-3
    assert difference.mean() < 1e-4
    # The same holds for the torch.stft implementation kept for benchmarks.
    torch_impl = LogMelFrontEnd(config, stft_impl="torch")(wave)[:, 0]
    assert torch.max(torch.abs(torch_impl - expected)) < 1e-4


def test_tone_energy_lands_in_the_right_mel_band():
    config = FrontEndConfig.for_sample_rate(16000)
    t = torch.arange(16000) / 16000
    logmel = LogMelFrontEnd(config)(torch.sin(2 * math.pi * 1000 * t)[None])[0, 0]
    mel_points = torchaudio.functional.melscale_fbanks(
        config.n_freqs, config.f_min, config.f_max, config.n_mels, config.sample_rate)
    freqs = torch.linspace(0, config.sample_rate / 2, config.n_freqs)
    centre_freqs = freqs[mel_points.argmax(dim=0)]
    peak_band = int(logmel.mean(dim=1).argmax())
    assert abs(float(centre_freqs[peak_band]) - 1000) < 60


def test_onnx_export_matches_pytorch_with_dynamic_batch(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    config = FrontEndConfig.for_sample_rate(8000)
    front_end = LogMelFrontEnd(config).eval()
    path = tmp_path / "frontend.onnx"
    torch.onnx.export(front_end, (torch.randn(2, 8000),), str(path), dynamo=True, opset_version=18,
                      input_names=["waveform"], output_names=["logmel"], verbose=False,
                      dynamic_shapes={"waveform": {0: torch.export.Dim("batch")}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        wave = torch.cat([_test_signal(8000, 8000), 0.1 * torch.randn(batch, 8000)])[:batch]
        (onnx_out,) = session.run(None, {"waveform": wave.numpy()})
        expected = front_end(wave).numpy()
        assert onnx_out.shape == expected.shape
        assert np.max(np.abs(onnx_out - expected)) < 1e-3
