"""Reading audio files: soundfile decodes, torchaudio resamples, every bad file is one clear error.

torch is imported only when a file actually needs resampling, so code that reads audio at its
native rate (firmware_export's runtime on a device host) works without torch installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from edgecl.errors import EdgeclError
from edgecl.resample_plan import plan_resample


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, without decoding the samples."""

    sample_rate: int
    frames: int
    channels: int


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _as_path(path: str | bytes | os.PathLike) -> Path:
    """A Path from a str, bytes or PathLike name (bytes that are not UTF-8 become the
    surrogate-escaped str os.listdir gives)."""
    return Path(os.fsdecode(path))


def _native(path: Path) -> bytes:
    """The file name as the bytes the OS knows: soundfile encodes a str name strictly, so a name
    that is not valid UTF-8 (surrogate-escaped) would fail to open as if the file were corrupt."""
    return os.fsencode(path)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise EdgeclError(f"{path}: audio file not found")
    if not path.is_file():
        raise EdgeclError(f"{path}: expected an audio file, found a folder or special file")


def audio_info(path: str | bytes | os.PathLike) -> AudioInfo:
    """Sample rate, frame count and channel count from the header of `path` (no decoding)."""
    path = _as_path(path)
    _require_file(path)
    try:
        info = sf.info(_native(path))
    except (sf.SoundFileError, RuntimeError, ValueError) as error:
        raise EdgeclError(f"{path}: unreadable or corrupt audio file "
                          f"({_one_line(error)})") from None
    return AudioInfo(sample_rate=int(info.samplerate), frames=int(info.frames),
                     channels=int(info.channels))


def read_audio(path: str | bytes | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode `path` as float32 `[channels, samples]` at its native rate; returns (samples, rate).

    Integer PCM (16/24/32-bit) is scaled to [-1, 1); float files are returned as stored.
    """
    path = _as_path(path)
    _require_file(path)
    try:
        samples, rate = sf.read(_native(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as error:
        raise EdgeclError(f"{path}: unreadable or corrupt audio file "
                          f"({_one_line(error)})") from None
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise EdgeclError(f"{path}: audio file has zero samples")
    if not np.isfinite(samples).all():
        raise EdgeclError(f"{path}: audio file contains NaN or Inf samples")
    return np.ascontiguousarray(samples.T), int(rate)


DECODE_BLOCK_FRAMES = 1 << 16  # frames decoded at once by check_audio


def check_audio(path: str | os.PathLike) -> AudioInfo:
    """Decode all of `path` as read_audio does, in blocks, so a long file is checked in bounded
    memory: the same EdgeclError for an unreadable, empty or non-finite file. Returns its header."""
    path = Path(path)
    _require_file(path)
    try:
        with sf.SoundFile(str(path)) as handle:
            info = AudioInfo(sample_rate=int(handle.samplerate), frames=int(handle.frames),
                             channels=int(handle.channels))
            decoded = 0
            for block in handle.blocks(blocksize=DECODE_BLOCK_FRAMES, dtype="float32",
                                       always_2d=True):
                if not np.isfinite(block).all():
                    raise EdgeclError(f"{path}: audio file contains NaN or Inf samples")
                decoded += block.shape[0]
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError) as error:
        raise EdgeclError(f"{path}: unreadable or corrupt audio file "
                          f"({_one_line(error)})") from None
    if decoded == 0 or info.channels == 0:
        raise EdgeclError(f"{path}: audio file has zero samples")
    return info


def resample(waveform: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a float32 1-D or 2-D (`[channels, samples]`) array with torchaudio, in the passes
    of `plan_resample` (one exact pass, torchaudio's own call, for every common rate; bounded
    passes for rates that share no small factor)."""
    if orig_rate == new_rate:
        return waveform
    import torch
    import torchaudio.functional as AF

    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    plan = plan_resample(orig_rate, new_rate)
    if plan.exact and len(plan.passes) == 1:
        return AF.resample(tensor, orig_rate, new_rate).numpy()
    for orig, new in plan.passes:
        tensor = AF.resample(tensor, orig, new)
    return fit_length(tensor.numpy(), plan.output_samples(waveform.shape[-1]))


def fit_length(waveform: np.ndarray, n_samples: int) -> np.ndarray:
    """Crop the end off, or zero-pad the end of, a 1-D waveform to exactly `n_samples`."""
    if n_samples <= 0:
        raise EdgeclError(f"clip length: expected a positive number of samples, got {n_samples}")
    if waveform.shape[-1] >= n_samples:
        return waveform[..., :n_samples]
    padding = [(0, 0)] * (waveform.ndim - 1) + [(0, n_samples - waveform.shape[-1])]
    return np.pad(waveform, padding)


def load_audio(path: str | bytes | os.PathLike, sample_rate: int,
               clip_samples: int | None = None) -> np.ndarray:
    """Load `path` as a float32 mono waveform in [-1, 1] at `sample_rate`.

    Channels are averaged, the signal is resampled with torchaudio when the file's rate differs,
    then cropped or zero-padded to `clip_samples` when given.
    """
    if sample_rate <= 0:
        raise EdgeclError(f"sample rate: expected a positive integer, got {sample_rate}")
    samples, native_rate = read_audio(path)
    mono = samples.mean(axis=0, dtype=np.float32)
    mono = resample(mono, native_rate, int(sample_rate))
    if clip_samples is not None:
        mono = fit_length(mono, int(clip_samples))
    # Float files may exceed full scale and resampling can overshoot slightly.
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


WAVEFORM_RAM_BYTES = 512 * 1024 * 1024  # keep decoded clips in RAM up to this much


class ClipAudio:
    """Waveforms of dataset clips at the model's rate and length, cached in RAM up to a limit."""

    def __init__(self, sample_rate: int, clip_samples: int, ram_bytes: int = WAVEFORM_RAM_BYTES):
        self.sample_rate, self.clip_samples = sample_rate, clip_samples
        self._room = ram_bytes // max(1, 4 * clip_samples)
        self._cache: dict[str, np.ndarray] = {}

    def waveform(self, clip) -> np.ndarray:
        """The clip (an edgecl.data.Clip) as a float32 waveform of `clip_samples` samples."""
        key = str(clip.path)
        if key in self._cache:
            return self._cache[key]
        wave = load_audio(clip.path, self.sample_rate, self.clip_samples)
        if len(self._cache) < self._room:
            self._cache[key] = wave
        return wave

    def loader(self, clip):
        """A zero-argument callable returning `waveform(clip)`."""
        return lambda: self.waveform(clip)
