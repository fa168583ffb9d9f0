"""Log-mel front end: waveform [B, T] -> log-mel [B, 1, n_mels, frames], part of every model.

Four implementations of the same transform (Hann window, center=True with reflect padding, power
spectrum, HTK mel filterbank from torchaudio without filter normalisation, log(mel + 1e-6)),
chosen by ``FrontEndConfig.stft_impl``:

- ``"conv"``: the STFT is a fixed Conv1d whose kernels are the Hann-windowed DFT basis (cosine and
  sine rows) with stride ``hop_length``, a direct DFT. Only the frequency bins that some mel
  filter uses are computed (at 44.1 kHz with f_max 14 kHz that drops about a third of them). In
  ONNX this becomes one Conv + Mul + MatMul.
- ``"factored"``: a two-stage Cooley-Tukey DFT as two grouped Conv1d's (models.factored_dft),
  3 to 6x fewer MACs than "conv" and faster in ONNX Runtime at 8, 16, 44.1 and 48 kHz
  (`edgecl bench frontend`), so ``FrontEndConfig.for_sample_rate`` picks it at those rates.
- ``"torch"``: torchaudio.transforms.MelSpectrogram (torch.stft; the ONNX STFT op). The reference.
- ``"rfft"``: frames (unfold) and torch.fft.rfft (the ONNX DFT op), for the benchmark.

All hold buffers only (no trainable parameters). No per-feature normalisation is applied here: the
networks start with BatchNorm-bearing blocks that learn the scale, and a fixed front end keeps
cached features valid across training phases. Configs written before ``stft_impl`` existed
(checkpoints, manifests) load as "conv", the only implementation models were trained with then.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from edgecl.errors import EdgeclError
from models.factored_dft import FactoredDft, factored_filterbank, factorization

LOG_OFFSET = 1e-6
STFT_IMPLS = ("conv", "factored", "torch", "rfft")
# Before stft_impl was recorded every model used the conv DFT: configs without the key are "conv".
LEGACY_STFT_IMPL = "conv"

# Published defaults per sample rate: (n_fft, hop_length, f_min, f_max, stft_impl). The STFT
# implementation is the one `edgecl bench frontend` measured fastest in ONNX Runtime at that rate
# (docs/results/speed.md, "Front end by sample rate"); unmeasured rates keep the conv DFT.
_KNOWN_RATES = {
    44100: (1024, 320, 50.0, 14000.0, "factored"),
    48000: (1024, 320, 50.0, 14000.0, "factored"),
    16000: (512, 160, 20.0, 8000.0, "factored"),
    8000: (256, 80, 20.0, 4000.0, "factored"),
}


def fft_size_32ms(sample_rate: int) -> int:
    """The power of two nearest a 32 ms window at `sample_rate` (the front end's default for
    unlisted rates; the pitch-shift perturbation uses it too)."""
    return 2 ** round(math.log2(sample_rate * 0.032))


@dataclass(frozen=True)
class FrontEndConfig:
    """Parameters of the log-mel front end; serialisable with to_dict/from_dict for manifests."""

    sample_rate: int
    n_fft: int
    hop_length: int
    f_min: float
    f_max: float
    n_mels: int = 64
    stft_impl: str = LEGACY_STFT_IMPL

    def __post_init__(self) -> None:
        if self.stft_impl not in STFT_IMPLS:
            raise EdgeclError(f"front end: stft_impl must be one of {STFT_IMPLS}, got "
                              f"{self.stft_impl!r}")
        if self.sample_rate <= 0:
            raise EdgeclError(f"front end: sample_rate must be positive, got {self.sample_rate}")
        if self.n_fft < 16 or self.hop_length <= 0 or self.n_mels <= 0:
            raise EdgeclError(
                f"front end: expected n_fft >= 16, hop_length > 0, n_mels > 0, got n_fft={self.n_fft}, "
                f"hop_length={self.hop_length}, n_mels={self.n_mels}")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise EdgeclError(
                f"front end: expected 0 <= f_min < f_max <= sample_rate/2 = {self.sample_rate / 2:g}, "
                f"got f_min={self.f_min:g}, f_max={self.f_max:g}")
        if self.stft_impl == "factored" and factorization(self.n_fft, self.hop_length,
                                                          self.n_freqs) is None:
            raise EdgeclError(f"front end: stft_impl 'factored' needs n_fft = N1 * N2 with N2 "
                              f"dividing hop_length; none for n_fft={self.n_fft}, "
                              f"hop_length={self.hop_length}")

    @classmethod
    def for_sample_rate(cls, sample_rate: int, n_mels: int = 64) -> FrontEndConfig:
        """Defaults for a sample rate: the published ones at 8/16/44.1/48 kHz, scaled otherwise.

        Other rates get a ~32 ms window rounded to a power of two, a 10 ms hop, 20 Hz to
        min(sample_rate / 2, 14 kHz).
        """
        sample_rate = int(sample_rate)
        stft_impl = LEGACY_STFT_IMPL
        if sample_rate in _KNOWN_RATES:
            n_fft, hop, f_min, f_max, stft_impl = _KNOWN_RATES[sample_rate]
        else:
            if sample_rate < 4000:
                raise EdgeclError(f"front end: sample_rate must be at least 4000 Hz, got {sample_rate}")
            n_fft = fft_size_32ms(sample_rate)
            hop = round(sample_rate * 0.010)
            f_min, f_max = 20.0, min(sample_rate / 2, 14000.0)
        return cls(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, f_min=f_min, f_max=f_max,
                   n_mels=n_mels, stft_impl=stft_impl)

    @property
    def n_freqs(self) -> int:
        """Number of one-sided STFT bins."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a clip of `n_samples` (center=True)."""
        return n_samples // self.hop_length + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON manifests."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontEndConfig:
        """Inverse of to_dict; names the missing or unknown key on bad input. Without stft_impl
        (written before it existed) the config is the conv DFT's."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        missing = {f.name for f in fields(cls) if f.name not in ("n_mels", "stft_impl")} - set(data)
        if unknown or missing:
            raise EdgeclError(f"front end config: unknown keys {sorted(unknown)}, missing keys "
                              f"{sorted(missing)}; expected {sorted(names)}")
        return cls(sample_rate=int(data["sample_rate"]), n_fft=int(data["n_fft"]),
                   hop_length=int(data["hop_length"]), f_min=float(data["f_min"]),
                   f_max=float(data["f_max"]), n_mels=int(data.get("n_mels", 64)),
                   stft_impl=str(data.get("stft_impl", LEGACY_STFT_IMPL)))


def mel_filterbank(config: FrontEndConfig) -> torch.Tensor:
    """torchaudio's HTK mel filterbank, [n_freqs, n_mels], float32."""
    return torchaudio.functional.melscale_fbanks(
        n_freqs=config.n_freqs, f_min=config.f_min, f_max=config.f_max, n_mels=config.n_mels,
        sample_rate=config.sample_rate, norm=None, mel_scale="htk")


def used_bins(filterbank: torch.Tensor) -> tuple[int, int]:
    """[first, last) range of STFT bins with a non-zero weight in some mel filter."""
    nonzero = torch.nonzero(filterbank.abs().sum(dim=1) > 0).flatten()
    return int(nonzero[0]), int(nonzero[-1]) + 1


def dft_kernels(n_fft: int, first_bin: int, last_bin: int,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Hann-windowed DFT basis as Conv1d weights [2 * bins, 1, n_fft]: cosine rows, then sine rows.
    The one definition of the basis: the exporter matches stored weights against it."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(first_bin, last_bin, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    phase = 2.0 * math.pi * torch.outer(k, n) / n_fft
    # The sign of the sine part does not matter: only the power spectrum is used.
    basis = torch.cat([torch.cos(phase), torch.sin(phase)]) * window
    return basis.to(dtype).unsqueeze(1)


class FramedDft(nn.Module):
    """Waveform [B, 1, T] -> windowed DFT [B, 2 * bins, frames] as one strided Conv1d (buffer kernel)."""

    def __init__(self, kernels: torch.Tensor, hop_length: int) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.register_buffer("kernels", kernels)  # [2 * bins, 1, n_fft]

    def forward(self, framed_input: torch.Tensor) -> torch.Tensor:
        return F.conv1d(framed_input, self.kernels, stride=self.hop_length)

    def count_macs(self, output: torch.Tensor) -> int:
        """Multiply-accumulates per example for an output of this module."""
        return output[0].numel() * self.kernels.shape[-1]


class MelProjection(nn.Module):
    """Power spectrum [B, bins, frames] -> mel energies [B, n_mels, frames] (one MatMul)."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weights", weights.t().contiguous())  # [n_mels, bins]

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weights, power)

    def count_macs(self, output: torch.Tensor) -> int:
        """Multiply-accumulates per example for an output of this module."""
        return output[0].numel() * self.weights.shape[1]


class RfftPower(nn.Module):
    """Padded waveform [B, 1, T + n_fft] -> power [B, bins, frames] of the used bins, by framing
    (unfold, a Gather in ONNX), the Hann window and torch.fft.rfft (the ONNX DFT op)."""

    def __init__(self, n_fft: int, hop_length: int, first_bin: int, last_bin: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.first_bin, self.last_bin = (
            n_fft, hop_length, first_bin, last_bin)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))

    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        frames = padded[:, 0].unfold(-1, self.n_fft, self.hop_length) * self.window
        spectrum = torch.fft.rfft(frames)[..., self.first_bin:self.last_bin]
        return (spectrum.real * spectrum.real + spectrum.imag * spectrum.imag).transpose(1, 2)


class LogMelFrontEnd(nn.Module):
    """Waveform [B, T] -> log-mel [B, 1, n_mels, frames]; buffers only, exports to ONNX.

    The STFT implementation is `config.stft_impl`, or `stft_impl` when given (which replaces the
    config's, so `self.config` always names the implementation that runs)."""

    def __init__(self, config: FrontEndConfig, stft_impl: str | None = None) -> None:
        super().__init__()
        if stft_impl is not None and stft_impl != config.stft_impl:
            config = replace(config, stft_impl=stft_impl)
        self.config = config
        filterbank = mel_filterbank(config)
        first, last = used_bins(filterbank)
        if self.stft_impl == "conv":
            self.n_bins = last - first
            self.dft = FramedDft(dft_kernels(config.n_fft, first, last), config.hop_length)
            self.mel = MelProjection(filterbank[first:last])
        elif self.stft_impl == "factored":
            n1 = factorization(config.n_fft, config.hop_length, last)
            self.dft = FactoredDft(config.n_fft, config.hop_length, n1, last)
            self.mel = MelProjection(factored_filterbank(filterbank, n1, first, last))
        elif self.stft_impl == "rfft":
            self.dft = RfftPower(config.n_fft, config.hop_length, first, last)
            self.mel = MelProjection(filterbank[first:last])
        else:
            self.mel_spectrogram = torchaudio.transforms.MelSpectrogram(
                sample_rate=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
                f_min=config.f_min, f_max=config.f_max, n_mels=config.n_mels, power=2.0,
                center=True, pad_mode="reflect", norm=None, mel_scale="htk")

    @property
    def stft_impl(self) -> str:
        return self.config.stft_impl

    def mel_energies(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform [B, T] -> mel power [B, n_mels, frames] (before the log)."""
        if waveform.shape[-1] <= self.config.n_fft // 2:
            raise EdgeclError(f"front end: clips must be longer than n_fft/2 = {self.config.n_fft // 2} "
                              f"samples for reflect padding, got {waveform.shape[-1]}")
        if self.stft_impl == "torch":
            return self.mel_spectrogram(waveform)
        half = self.config.n_fft // 2
        padded = F.pad(waveform.unsqueeze(1), (half, half), mode="reflect")
        if self.stft_impl != "conv":
            return self.mel(self.dft(padded))
        spectrum = self.dft(padded)  # [B, 2 * bins, frames]
        real, imag = spectrum[:, : self.n_bins], spectrum[:, self.n_bins:]
        return self.mel(real * real + imag * imag)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel_energies(waveform) + LOG_OFFSET).unsqueeze(1)
