"""Log-mel front end: defaults, config round trip, parity with torchaudio, ONNX export parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio

from edgecl.errors import EdgeclError
from models.factored_dft import FactoredDft, factored_macs_per_frame, factorization
from models.frontend import (
    STFT_IMPLS,
    FrontEndConfig,
    LogMelFrontEnd,
    dft_kernels,
    mel_filterbank,
    used_bins,
)
from models.profile import module_macs

# One thread: on a shared 2-core machine OpenMP spin-waiting makes 2 threads 10x slower.


def test_published_defaults_per_sample_rate():
    expected = {44100: (1024, 320, 50, 14000), 48000: (1024, 320, 50, 14000),
                16000: (512, 160, 20, 8000), 8000: (256, 80, 20, 4000)}
    for rate, (n_fft, hop, f_min, f_max) in expected.items():
        config = FrontEndConfig.for_sample_rate(rate)
        assert (config.n_fft, config.hop_length, config.f_min, config.f_max, config.n_mels) == (
            n_fft, hop, f_min, f_max, 64)
        # `edgecl bench frontend` measured the factored DFT fastest at every published rate
        assert config.stft_impl == "factored"


def test_other_rates_scale_window_hop_and_band():
    config = FrontEndConfig.for_sample_rate(22050)
    assert (config.n_fft, config.hop_length, config.f_max) == (512, 220, 11025)
    assert config.stft_impl == "conv"  # not measured: the conv DFT stays
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
    with pytest.raises(EdgeclError, match="'factored' needs"):
        FrontEndConfig(sample_rate=8000, n_fft=256, hop_length=81, f_min=20, f_max=4000,
                       stft_impl="factored")
    with pytest.raises(EdgeclError, match="longer than"):
        LogMelFrontEnd(config)(torch.zeros(1, config.n_fft // 2))


def test_configs_without_stft_impl_are_the_conv_dft_and_the_impl_round_trips():
    """Checkpoints and manifests written before stft_impl existed load as the conv DFT."""
    import models

    old = {k: v for k, v in FrontEndConfig.for_sample_rate(8000).to_dict().items()
           if k != "stft_impl"}
    assert FrontEndConfig.from_dict(old).stft_impl == "conv"
    conv = models.build_model("bc-resnet", 3, FrontEndConfig.from_dict(old), width=8)
    rebuilt = models.rebuild({"name": "bc-resnet", "n_classes": 3, "frontend": old, "width": 8})
    assert rebuilt.frontend.stft_impl == "conv"
    rebuilt.load_state_dict(conv.state_dict())  # the old buffers fit
    for impl in STFT_IMPLS:
        config = FrontEndConfig.from_dict({**old, "stft_impl": impl})
        assert FrontEndConfig.from_dict(config.to_dict()) == config
        assert LogMelFrontEnd(config).stft_impl == impl
    overridden = LogMelFrontEnd(FrontEndConfig.for_sample_rate(8000), stft_impl="conv")
    assert overridden.config.stft_impl == "conv"  # the config names what runs


@pytest.mark.parametrize("impl", STFT_IMPLS)
@pytest.mark.parametrize("rate,samples", [(8000, 8000), (44100, 22050)])
def test_shape_and_no_trainable_parameters(rate, samples, impl):
    config = FrontEndConfig.for_sample_rate(rate)
    front_end = LogMelFrontEnd(config, stft_impl=impl)
    out = front_end(torch.randn(3, samples))
    assert out.shape == (3, 1, 64, samples // config.hop_length + 1)
    assert config.n_frames(samples) == out.shape[-1]
    assert list(front_end.parameters()) == []
    assert len(list(front_end.buffers())) >= 1


def test_factorization_picks_the_cheapest_split_with_n2_dividing_the_hop():
    assert factorization(1024, 320, 326) == 32  # N2 = 32 divides 320
    assert factorization(256, 80, 129) == 16
    assert factorization(256, 81, 129) is None  # 81 = 3^4: no power of two >= 2 divides it
    for n_fft, hop, last in ((1024, 320, 326), (512, 160, 257), (256, 80, 129)):
        n1 = factorization(n_fft, hop, last)
        assert hop % (n_fft // n1) == 0
        cost = factored_macs_per_frame(n_fft, n1, last)
        assert all(cost <= factored_macs_per_frame(n_fft, other, last)
                   for other in (2, 4, 8, 16, 32, 64, 128) if hop % (n_fft // other) == 0)
        assert cost < 2 * n_fft * last / 3  # at least 3x fewer than the direct DFT of the bins


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_factored_dft_costs_a_fraction_of_the_conv_dft(rate):
    config = FrontEndConfig.for_sample_rate(rate)
    conv = module_macs(LogMelFrontEnd(config, stft_impl="conv"), rate)
    factored = module_macs(LogMelFrontEnd(config, stft_impl="factored"), rate)
    assert 0 < factored < conv / 2.5  # mel MatMul included: 3x fewer at 8 kHz, 5x at 44.1


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


def float64_front_end(config: FrontEndConfig, impl: str) -> LogMelFrontEnd:
    """LogMelFrontEnd(config, impl) in float64 with its window and DFT weights computed in
    float64 (not float32 values cast up); the mel filterbank is torchaudio's float32 one in all."""
    front_end = LogMelFrontEnd(config, stft_impl=impl).double()
    window = torch.hann_window(config.n_fft, periodic=True, dtype=torch.float64)
    first, last = used_bins(mel_filterbank(config))
    if impl == "factored":
        front_end.dft = FactoredDft(config.n_fft, config.hop_length, front_end.dft.n1, last,
                                    dtype=torch.float64)
    elif impl == "conv":
        front_end.dft.kernels = dft_kernels(config.n_fft, first, last, dtype=torch.float64)
    elif impl == "rfft":
        front_end.dft.window = window
    else:
        front_end.mel_spectrogram.spectrogram.window = window
    return front_end


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
@pytest.mark.parametrize("impl", ["factored", "rfft", "conv"])
def test_every_impl_is_the_same_transform_as_torchaudio_in_float64(rate, impl):
    """In float64 every implementation is torchaudio's transform up to rounding (measured 2e-10 at most
    on log-mel values of order 10, silent frames included): any indexing, window or twiddle
    mistake would show at 1e-2 or more. In float32 on noise (no near-silent bins) they agree
    within 1e-4 (measured about 1e-5)."""
    config = FrontEndConfig.for_sample_rate(rate)
    wave = _test_signal(rate, rate // 4).double()
    reference = float64_front_end(config, "torch")(wave)
    assert torch.max(torch.abs(float64_front_end(config, impl)(wave) - reference)) < 1e-8
    noise = torch.from_numpy(np.random.default_rng(1).standard_normal((2, rate // 4)) * 0.1)
    float32 = LogMelFrontEnd(config, stft_impl=impl)(noise.float()).double()
    assert torch.max(torch.abs(float32 - float64_front_end(config, "torch")(noise))) < 1e-4


def test_factored_mel_matrix_uses_exactly_the_filterbank_bins():
    config = FrontEndConfig.for_sample_rate(44100)
    filterbank = mel_filterbank(config)
    first, last = used_bins(filterbank)
    mel = LogMelFrontEnd(config, stft_impl="factored").mel.weights  # [n_mels, N1 * K2]
    assert mel.shape[1] >= last - first
    assert torch.equal(torch.sort(mel.sum(dim=0)).values[-(last - first):],
                       torch.sort(filterbank[first:last].sum(dim=1)).values)


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
