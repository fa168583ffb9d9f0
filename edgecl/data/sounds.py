"""Parametric families of environmental sounds, synthesised with numpy alone.

Each family is a function `(rng, n_samples, sample_rate) -> float64 waveform` that draws its own
parameters from `rng`, so every call gives a different member of the family. Parameter ranges
of neighbouring families touch on purpose (droplets and glass pings share frequencies, knocks and
clock ticks are both damped impacts, siren, whistle and bell are all tonal) so that the dataset
built from them is learnable but not trivial.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Family = Callable[[np.random.Generator, int, int], np.ndarray]


# ---------------------------------------------------------------------------- building blocks

def _normalise(signal: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(signal ** 2))
    return signal / rms if rms > 0 else signal


def coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    return _normalise(np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n))


def band_noise(rng: np.random.Generator, n: int, sample_rate: int, centre: float,
               width: float) -> np.ndarray:
    """Unit-RMS noise with a Gaussian-shaped band around `centre` Hz (`width` = std in Hz)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    return _normalise(np.fft.irfft(spectrum * np.exp(-0.5 * ((freqs - centre) / width) ** 2), n))


def smooth_random(rng: np.random.Generator, n: int, sample_rate: int,
                  cutoff_hz: float) -> np.ndarray:
    """A slowly varying zero-mean, unit-std curve (noise low-passed at `cutoff_hz`)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    curve = np.fft.irfft(spectrum * np.exp(-0.5 * (freqs / cutoff_hz) ** 2), n)
    return (curve - curve.mean()) / (curve.std() + 1e-12)


def damped_sines(freqs: np.ndarray, decays: np.ndarray, amplitudes: np.ndarray,
                 sample_rate: int, length: int, phases: np.ndarray | None = None) -> np.ndarray:
    """Kernels `[K, length]`: sinusoids at `freqs` Hz decaying with time constants `decays` s."""
    t = np.arange(length) / sample_rate
    phases = np.zeros(len(freqs)) if phases is None else phases
    return (amplitudes[:, None] * np.exp(-t[None, :] / decays[:, None])
            * np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]))


def add_events(n: int, onsets: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """A length-`n` signal with kernel k added at sample `onsets[k]` (truncated at the end)."""
    index = onsets.astype(np.int64)[:, None] + np.arange(kernels.shape[1])[None, :]
    inside = (index >= 0) & (index < n)
    return np.bincount(index[inside], weights=kernels[inside], minlength=n)[:n]


def tone(inst_freq: np.ndarray, sample_rate: int, harmonics: np.ndarray,
         phase0: float = 0.0) -> np.ndarray:
    """Harmonic tone following `inst_freq` (Hz per sample); harmonics above Nyquist are dropped."""
    phase = 2 * np.pi * np.cumsum(inst_freq) / sample_rate + phase0
    orders = np.arange(1, len(harmonics) + 1)
    audible = (orders[:, None] * inst_freq[None, :]) < 0.45 * sample_rate
    return np.sum(harmonics[:, None] * audible * np.sin(orders[:, None] * phase[None, :]), axis=0)


def segment_envelope(rng: np.random.Generator, n: int, sample_rate: int,
                     partial_probability: float) -> np.ndarray:
    """Envelope of a continuous source: the whole clip, or (sometimes) a passing segment."""
    envelope = np.ones(n)
    if rng.random() < partial_probability:
        length = int(rng.uniform(0.4, 0.9) * n)
        start = int(rng.integers(0, n - length + 1))
        envelope[:] = 0.0
        envelope[start:start + length] = np.hanning(length)
    fade = max(1, int(0.01 * sample_rate))
    envelope[:fade] *= np.linspace(0.0, 1.0, fade)
    envelope[-fade:] *= np.linspace(1.0, 0.0, fade)
    return envelope


# ----------------------------------------------------------------------------------- families

def siren(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Emergency siren: a harmonic tone swept by a slow (wail) or fast (yelp) LFO."""
    t = np.arange(n) / sr
    centre, depth = rng.uniform(550, 1400), rng.uniform(150, 700)
    rate = rng.uniform(0.4, 7.0)
    lfo_phase = 2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)
    lfo = np.sin(lfo_phase) if rng.random() < 0.5 else 2 / np.pi * np.arcsin(np.sin(lfo_phase))
    doppler = 1.0 + rng.uniform(-0.06, 0.06) * t
    inst_freq = (centre + depth * lfo) * doppler
    harmonics = np.concatenate([[1.0], rng.uniform(0.05, 0.5, size=int(rng.integers(0, 4)))])
    signal = tone(inst_freq, sr, harmonics, rng.uniform(0, 2 * np.pi))
    return signal * segment_envelope(rng, n, sr, 0.3)


def engine(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Combustion engine: many harmonics of a low firing rate with AM, FM jitter and rumble."""
    t = np.arange(n) / sr
    f0 = rng.uniform(22, 90)
    rev = 1.0 + rng.uniform(-0.2, 0.5) * t / t[-1] if rng.random() < 0.4 else 1.0
    inst_freq = f0 * rev * (1.0 + rng.uniform(0.005, 0.04) * smooth_random(rng, n, sr, 3.0))
    count = int(rng.integers(10, 40))
    harmonics = np.arange(1, count + 1) ** -rng.uniform(0.4, 1.4) * rng.uniform(0.5, 1.0, count)
    signal = tone(inst_freq, sr, harmonics, rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(inst_freq) / sr
    signal *= 1.0 + rng.uniform(0.1, 0.7) * np.sin(0.5 * phase)
    rumble = coloured_noise(rng, n, 2.0) * rng.uniform(0.1, 0.6)
    return (_normalise(signal) + rumble) * segment_envelope(rng, n, sr, 0.3)


def rain(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Rain: broadband hiss plus many short droplet pings at random times."""
    hiss = band_noise(rng, n, sr, rng.uniform(1500, 5000), rng.uniform(800, 3000))
    count = int(rng.poisson(rng.uniform(30, 300) * n / sr))
    length = int(0.04 * sr)
    drops = add_events(n, rng.integers(0, n, count),
                       damped_sines(rng.uniform(1000, 5500, count), rng.uniform(0.002, 0.01, count),
                                    rng.lognormal(0.0, 0.6, count), sr, length,
                                    rng.uniform(0, 2 * np.pi, count)))
    return rng.uniform(0.2, 1.0) * hiss + _normalise(drops) * rng.uniform(0.3, 1.0)


def bird(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bird song: a repeated chirp motif (sweeps or trills) with small variations."""
    out = np.zeros(n)
    duration = rng.uniform(0.04, 0.2)
    f_start = rng.uniform(1800, 5500)
    f_ratio = rng.uniform(0.55, 1.7)
    trill_rate, trill_depth = rng.uniform(15, 60), rng.uniform(0, 500) * (rng.random() < 0.5)
    second = rng.uniform(0.0, 0.3)
    onset = rng.uniform(0.0, 0.15)
    for _ in range(int(rng.integers(2, 9))):
        if onset + duration > n / sr:
            break
        length = int(duration * rng.uniform(0.85, 1.15) * sr)
        u = np.linspace(0.0, 1.0, length)
        start = f_start * rng.uniform(0.95, 1.05)
        inst_freq = (start * f_ratio ** u
                     + trill_depth * np.sin(2 * np.pi * trill_rate * u * length / sr))
        chirp = tone(inst_freq, sr, np.array([1.0, second])) * np.hanning(length)
        begin = int(onset * sr)
        out[begin:begin + length] += chirp[:n - begin] * rng.uniform(0.6, 1.0)
        onset += duration + rng.uniform(0.02, 0.2)
    return out


def clock_tick(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Mechanical clock: regular, very short high clicks alternating tick and tock."""
    period = rng.uniform(0.12, 0.5)
    onsets = np.arange(rng.uniform(0, period), n / sr, period)
    onsets = onsets + rng.normal(0, 0.0015, onsets.size)
    count = onsets.size
    base = rng.uniform(1000, 5000)
    tock = np.where(np.arange(count) % 2 == 1, rng.uniform(0.75, 1.0), 1.0)
    length = int(0.03 * sr)
    partials = []
    for ratio in (1.0, rng.uniform(1.3, 2.2), rng.uniform(2.3, 3.5)):
        partials.append(damped_sines(base * ratio * tock, rng.uniform(0.001, 0.005, count),
                                     tock * rng.uniform(0.3, 1.0), sr, length))
    click = np.sum(partials, axis=0)
    return add_events(n, onsets * sr, click)


def knock(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Knocking on wood: a few grouped low damped resonances with a short noise transient."""
    count = int(rng.integers(1, 6))
    gaps = rng.uniform(0.08, 0.3, count)
    onsets = rng.uniform(0, 0.3) + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    modes = rng.uniform(80, 1200, size=3)
    decays = rng.uniform(0.012, 0.08, size=3)
    length = int(0.3 * sr)
    kernel = damped_sines(modes, decays, rng.uniform(0.3, 1.0, 3), sr, length).sum(axis=0)
    transient = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.002 * sr))
    kernel += rng.uniform(0.1, 0.6) * transient
    kernels = kernel[None, :] * rng.uniform(0.6, 1.0, count)[:, None]
    return add_events(n, onsets * sr, kernels)


def bell(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Bell: inharmonic partials with long, frequency-dependent decays and slight beating."""
    f0 = rng.uniform(250, 1500)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 2.66, 3.01, 4.1])
    ratios = ratios * rng.uniform(0.97, 1.03, ratios.size)
    freqs = f0 * ratios
    keep = freqs < 0.45 * sr
    freqs = np.concatenate([freqs[keep], freqs[keep] + rng.uniform(0.5, 4.0, keep.sum())])
    size = freqs.size
    decays = rng.uniform(0.3, 2.5) / (freqs / f0) ** rng.uniform(0.3, 1.0)
    amplitudes = rng.uniform(0.2, 1.0, size) * np.where(np.arange(size) < size // 2, 1.0, 0.5)
    ring = damped_sines(freqs, decays, amplitudes, sr, n, rng.uniform(0, 2 * np.pi, size)).sum(0)
    strikes = rng.uniform(0, 0.6, int(rng.integers(1, 4)))
    strikes[0] = min(strikes)
    return add_events(n, strikes * sr, np.tile(ring, (strikes.size, 1)))


def wind(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Wind: low broadband noise in gusts, sometimes with a wandering whistle."""
    gusts = np.exp(rng.uniform(0.3, 1.2) * smooth_random(rng, n, sr, rng.uniform(0.5, 3.0)))
    body = band_noise(rng, n, sr, rng.uniform(100, 1200), rng.uniform(150, 900))
    body += rng.uniform(0.0, 0.8) * coloured_noise(rng, n, 2.0)
    signal = _normalise(body)
    if rng.random() < 0.5:
        inst_freq = rng.uniform(400, 1500) * (1 + 0.1 * smooth_random(rng, n, sr, 1.5))
        signal += rng.uniform(0.1, 0.5) * tone(inst_freq, sr, np.array([1.0]))
    return signal * gusts


def glass(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Breaking glass: an impact burst followed by a shower of bright short pings."""
    impact = rng.uniform(0.0, 0.6)
    burst_length = int(rng.uniform(0.005, 0.03) * sr)
    burst = (band_noise(rng, burst_length, sr, rng.uniform(3000, 6000), 2000)
             * np.exp(-np.arange(burst_length) / (0.3 * burst_length)))
    count = int(rng.integers(15, 80))
    onsets = impact + rng.exponential(rng.uniform(0.03, 0.15), count)
    length = int(0.15 * sr)
    pings = damped_sines(rng.uniform(2500, 7500, count), rng.uniform(0.004, 0.04, count),
                         rng.lognormal(-0.5, 0.5, count), sr, length,
                         rng.uniform(0, 2 * np.pi, count))
    out = add_events(n, onsets * sr, pings)
    out = _normalise(out) + rng.uniform(0.5, 2.0) * add_events(n, np.array([impact * sr]),
                                                               burst[None, :])
    return out


def dog_bark(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Barking: short harmonic bursts with falling pitch, a formant and breath noise."""
    out = np.zeros(n)
    onset = rng.uniform(0.0, 0.4)
    f0 = rng.uniform(300, 800)
    formant = rng.uniform(700, 2200)
    orders = np.arange(1, 16)
    harmonics = np.exp(-0.5 * ((orders * f0 - formant) / rng.uniform(300, 900)) ** 2) + 0.05
    for _ in range(int(rng.integers(1, 5))):
        length = int(rng.uniform(0.08, 0.25) * sr)
        if onset * sr + length > n:
            break
        u = np.linspace(0.0, 1.0, length)
        inst_freq = f0 * rng.uniform(0.9, 1.1) * (1 - rng.uniform(0.1, 0.4) * u)
        envelope = np.minimum(1.0, u * length / (0.01 * sr)) * np.exp(-u * rng.uniform(1.5, 4))
        voice = tone(inst_freq, sr, harmonics) + rng.uniform(0.1, 0.6) * band_noise(
            rng, length, sr, formant, 600) * np.sqrt(np.mean(harmonics ** 2))
        begin = int(onset * sr)
        out[begin:begin + length] += voice * envelope
        onset += length / sr + rng.uniform(0.05, 0.3)
    return out


FAMILIES: dict[str, Family] = {
    "bell": bell,
    "bird": bird,
    "clock_tick": clock_tick,
    "dog_bark": dog_bark,
    "engine": engine,
    "glass": glass,
    "knock": knock,
    "rain": rain,
    "siren": siren,
    "wind": wind,
}
