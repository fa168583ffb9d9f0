"""Waveform perturbations for the uncertainty sampler, batched and driven by a torch Generator.

The published code uses torch_audiomentations with its defaults; the same ranges are used here:
- pitch shift: uniform in [-4, +4] semitones, tempo kept. torchaudio.functional.pitch_shift is slow
  because it resamples by 2**(n/12), an irrational ratio with a huge filter; here the ratio is
  rounded to p/32 (steps of about half a semitone), the clip is time-stretched by that ratio with a
  phase vocoder (torchaudio.functional.phase_vocoder) and then resampled p -> 32, which is cheap.
  Clips sharing a rounded ratio are processed as one batch.
- time shift: a circular shift by a uniform fraction in [-0.5, 0.5] of the clip (rollover).
- coloured noise: Gaussian noise whose power spectrum falls as 1/f**decay, decay uniform in
  [-2, 2] (violet to brown), scaled to a uniform SNR in [3, 30] dB against the clip's RMS.

The random draws are made on the CPU by the caller's generator (the same draws on every device)
and moved to the waveforms' device, where the perturbation itself is computed.
"""

from __future__ import annotations

import math

import torch
import torchaudio.functional as AF

from edgecl.budget.macs import RESAMPLE_TAPS, fft_macs
from edgecl.errors import EdgeclError

PITCH_SEMITONES = 4.0
RATIO_DENOMINATOR = 32
SHIFT_FRACTION = 0.5
NOISE_SNR_DB = (3.0, 30.0)
NOISE_DECAY = (-2.0, 2.0)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to `length`."""
    if waveform.shape[-1] >= length:
        return waveform[..., :length]
    return torch.nn.functional.pad(waveform, (0, length - waveform.shape[-1]))


def stft_size(sample_rate: int, length: int) -> int:
    """The pitch shift's STFT size: a power of two of about 32 ms, at most half the clip (reflect
    padding needs it). Its cost estimate (`perturbation_macs`) uses the same size."""
    from models.frontend import fft_size_32ms

    return 2 ** max(3, min(int(math.log2(fft_size_32ms(sample_rate))), int(math.log2(length)) - 1))


def pitch_shift_by_ratio(waveforms: torch.Tensor, numerator: int, sample_rate: int,
                         denominator: int = RATIO_DENOMINATOR) -> torch.Tensor:
    """Raise the pitch of [B, T] waveforms by numerator/denominator, keeping their length."""
    if numerator == denominator:
        return waveforms.clone()
    length = waveforms.shape[-1]
    ratio = numerator / denominator
    n_fft = stft_size(sample_rate, length)
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=waveforms.device)
    spec = torch.stft(waveforms, n_fft, hop, window=window, return_complex=True)
    phase_advance = torch.linspace(0, math.pi * hop, spec.shape[-2],
                                   device=waveforms.device)[..., None]
    stretched = AF.phase_vocoder(spec, 1.0 / ratio, phase_advance)
    longer = torch.istft(stretched, n_fft, hop, window=window, length=round(length * ratio))
    return _fit_length(AF.resample(longer, numerator, denominator), length)


def pitch_shift(waveforms: torch.Tensor, sample_rate: int, generator: torch.Generator,
                semitones: float = PITCH_SEMITONES) -> torch.Tensor:
    """Each clip pitch-shifted by its own uniform draw in [-semitones, +semitones]."""
    steps = _uniform(len(waveforms), -semitones, semitones, generator)
    numerators = torch.round(RATIO_DENOMINATOR * 2.0 ** (steps / 12.0)).long()
    out = torch.empty_like(waveforms)
    for numerator in numerators.unique().tolist():
        rows = (numerators == numerator).nonzero().flatten()
        out[rows] = pitch_shift_by_ratio(waveforms[rows], numerator, sample_rate)
    return out


def time_shift(waveforms: torch.Tensor, generator: torch.Generator,
               fraction: float = SHIFT_FRACTION) -> torch.Tensor:
    """Each clip rolled circularly by its own uniform fraction in [-fraction, fraction]."""
    length = waveforms.shape[-1]
    shifts = torch.round(_uniform(len(waveforms), -fraction, fraction, generator) * length).long()
    return torch.stack([torch.roll(w, int(s)) for w, s in zip(waveforms, shifts, strict=True)])


def coloured_noise(waveforms: torch.Tensor, generator: torch.Generator,
                   snr_db: tuple[float, float] = NOISE_SNR_DB,
                   decay: tuple[float, float] = NOISE_DECAY) -> torch.Tensor:
    """Each clip plus noise of its own colour (power ~ 1/f**decay) at its own SNR."""
    batch, length = waveforms.shape
    device = waveforms.device
    white = torch.randn(batch, length, generator=generator).to(device)
    spectrum = torch.fft.rfft(white)
    bins = torch.arange(spectrum.shape[-1], device=device).clamp(min=1).float()
    decays = _uniform(batch, *decay, generator)[:, None].to(device)
    noise = torch.fft.irfft(spectrum * bins[None, :] ** (-decays / 2), n=length)
    noise = noise / noise.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-12)
    snr = _uniform(batch, *snr_db, generator)[:, None].to(device)
    signal_rms = waveforms.pow(2).mean(dim=1, keepdim=True).sqrt()
    return waveforms + noise * signal_rms / 10.0 ** (snr / 20.0)


def perturbation_macs(kind: str, clip_samples: int, sample_rate: int = 16000) -> int:
    """Rough MACs of producing one perturbed copy of a clip (averaged over a sampler's k draws):

    - noise: an rfft and an irfft of the clip's length, the 1/f shaping, the RMS and the scaled
      add (~4 MACs per sample).
    - shift: half the draws are time shifts (a roll, 0 MACs), half pitch shifts: an STFT and an
      inverse STFT (`stft_size`, hop n_fft/4), the phase vocoder (~4 MACs per bin and frame) and a
      polyphase resample (~13 taps per sample).
    - noisytune perturbs the embedding (~1 MAC per dimension, negligible): 0.
    These are order-of-magnitude figures; the forward passes dominate a memory update.
    """
    if kind == "noise":
        return 2 * fft_macs(clip_samples) + 4 * clip_samples
    if kind == "shift":
        n_fft = stft_size(sample_rate, clip_samples)
        frames = clip_samples // (n_fft // 4) + 1
        stft_pair = 2 * frames * fft_macs(n_fft)
        vocoder = 4 * frames * (n_fft // 2 + 1)
        return (stft_pair + vocoder + RESAMPLE_TAPS * clip_samples) // 2
    if kind == "noisytune":
        return 0
    raise EdgeclError(f"--uncert-metric: expected shift, noise or noisytune, got {kind!r}")
