"""Exemplar storage formats: how one replay-memory exemplar is stored on a device, byte for byte.

Four formats (`get_format(name)`):

| name      | domain   | payload per element        | decode error bound                               |
|-----------|----------|----------------------------|--------------------------------------------------|
| `float32` | waveform | 4 bytes, IEEE float32      | exact                                            |
| `pcm16`   | waveform | 2 bytes, int16 = round(x * 32767) | 0.5 / 32767 (< 1/32768) inside [-1, 1]    |
| `mulaw8`  | waveform | 1 byte, mu-law (mu = 255)  | half a mu-law step at that amplitude             |
| `logmel8` | logmel   | 1 byte, uint8 = round((x - offset) / scale) | scale / 2 = (max - min) / 255 / 2 |

Waveform formats clip samples to [-1, 1] (the audio loader's range) before quantising.

Every exemplar carries a small header, counted in `nbytes` because a device has to store it too.
Little-endian, 4-byte aligned:

    uint16  target      class id (index in the run's class order)
    uint16  ndim        number of dimensions of the stored array
    uint32  dims[ndim]  the array's shape
    float32 scale       logmel8 only: quantisation step
    float32 offset      logmel8 only: value of code 0
    payload             prod(dims) elements of the format's element type

So a 1-s clip at 8 kHz costs 8 + 32000 bytes as float32, 8 + 16000 as pcm16 and 8 + 8000 as mulaw8;
a [1, 64, 101] log-mel costs 24 + 6464 bytes as logmel8. `Encoded.to_bytes(target)` produces exactly
this layout (and `decode_bytes` reads it back), so the count is the size of a real record.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgecl.errors import EdgeclError

MU = 255  # mu-law constant for 8-bit codes (256 levels), as in G.711 and torchaudio
PCM16_SCALE = 32767.0  # symmetric: +1.0 -> 32767, -1.0 -> -32767
_TARGET_AND_NDIM = struct.Struct("<HH")
_DIM = struct.Struct("<I")
_SCALE_OFFSET = struct.Struct("<ff")


@dataclass(frozen=True)
class Encoded:
    """One stored exemplar: the payload array plus the header fields needed to decode it."""

    format_name: str
    payload: np.ndarray  # the stored elements, flat, in the format's element type
    shape: tuple[int, ...]  # shape of the original array
    scale: float | None = None  # logmel8 only
    offset: float | None = None  # logmel8 only

    @property
    def header_nbytes(self) -> int:
        """Bytes of the header (target, ndim, dims and, for logmel8, scale and offset)."""
        return _header_nbytes(len(self.shape), self.scale is not None)

    @property
    def nbytes(self) -> int:
        """Bytes this exemplar occupies in memory: header plus payload."""
        return self.header_nbytes + self.payload.nbytes

    def to_bytes(self, target: int) -> bytes:
        """The exemplar as a device record (layout in the module docstring), `nbytes` long."""
        if not 0 <= target <= 0xFFFF:
            raise EdgeclError(f"exemplar target {target}: expected a class id in [0, 65535]")
        parts = [_TARGET_AND_NDIM.pack(target, len(self.shape))]
        parts += [_DIM.pack(size) for size in self.shape]
        if self.scale is not None:
            parts.append(_SCALE_OFFSET.pack(self.scale, self.offset))
        parts.append(self.payload.astype(self.payload.dtype.newbyteorder("<"), copy=False).tobytes())
        return b"".join(parts)


def _header_nbytes(ndim: int, has_scale: bool) -> int:
    return _TARGET_AND_NDIM.size + ndim * _DIM.size + (_SCALE_OFFSET.size if has_scale else 0)


class ExemplarFormat:
    """A storage format: `encode(array) -> Encoded`, `decode(Encoded) -> float32 array`."""

    def __init__(self, name: str, domain: str, dtype: np.dtype, has_scale: bool,
                 encode_payload: Callable[[np.ndarray], tuple[np.ndarray, float | None, float | None]],
                 decode_payload: Callable[[Encoded], np.ndarray]) -> None:
        self.name = name
        self.domain = domain  # "waveform" or "logmel": what the trainer must hand to encode()
        self.dtype = np.dtype(dtype)
        self._has_scale = has_scale
        self._encode_payload = encode_payload
        self._decode_payload = decode_payload

    def __repr__(self) -> str:
        return f"ExemplarFormat({self.name!r}, domain={self.domain!r})"

    def nbytes(self, shape: tuple[int, ...] | list[int]) -> int:
        """Bytes stored per exemplar of this shape, header included (same for every exemplar)."""
        shape = tuple(int(size) for size in shape)
        return _header_nbytes(len(shape), self._has_scale) + math.prod(shape) * self.dtype.itemsize

    def encode(self, array: np.ndarray) -> Encoded:
        """Quantise `array` (float, finite) into a stored exemplar."""
        values = np.asarray(array)
        if not np.issubdtype(values.dtype, np.floating):
            raise EdgeclError(f"memory format {self.name}: expected a float array, got {values.dtype}")
        if values.size == 0 or not np.isfinite(values).all():
            raise EdgeclError(f"memory format {self.name}: expected a non-empty array of finite "
                              f"values")
        payload, scale, offset = self._encode_payload(values.reshape(-1))
        return Encoded(self.name, payload, tuple(int(s) for s in values.shape), scale, offset)

    def decode(self, encoded: Encoded) -> np.ndarray:
        """The stored exemplar as a float32 array of its original shape."""
        if encoded.format_name != self.name:
            raise EdgeclError(f"memory format {self.name}: cannot decode a {encoded.format_name} "
                              f"exemplar")
        return self._decode_payload(encoded).astype(np.float32, copy=False).reshape(encoded.shape)

    def decode_bytes(self, record: bytes) -> tuple[int, np.ndarray]:
        """Read back a record written by `Encoded.to_bytes`: (target, decoded float32 array)."""
        target, ndim = _TARGET_AND_NDIM.unpack_from(record, 0)
        position = _TARGET_AND_NDIM.size
        shape = tuple(_DIM.unpack_from(record, position + i * _DIM.size)[0] for i in range(ndim))
        position += ndim * _DIM.size
        scale = offset = None
        if self._has_scale:
            scale, offset = _SCALE_OFFSET.unpack_from(record, position)
            position += _SCALE_OFFSET.size
        payload = np.frombuffer(record, dtype=self.dtype.newbyteorder("<"), offset=position,
                                count=math.prod(shape)).astype(self.dtype)
        return target, self.decode(Encoded(self.name, payload, shape, scale, offset))


def _clip_unit(values: np.ndarray) -> np.ndarray:
    return np.clip(values.astype(np.float64, copy=False), -1.0, 1.0)


def _float32_encode(values: np.ndarray):
    return values.astype(np.float32, copy=True), None, None


def _pcm16_encode(values: np.ndarray):
    return np.round(_clip_unit(values) * PCM16_SCALE).astype(np.int16), None, None


def _pcm16_decode(encoded: Encoded) -> np.ndarray:
    return encoded.payload.astype(np.float32) / np.float32(PCM16_SCALE)


def mulaw_compress(values: np.ndarray) -> np.ndarray:
    """Mu-law companding of samples in [-1, 1] to [-1, 1] (float64)."""
    values = _clip_unit(values)
    return np.sign(values) * np.log1p(MU * np.abs(values)) / np.log1p(MU)


def mulaw_expand(companded: np.ndarray) -> np.ndarray:
    """Inverse of `mulaw_compress` (float64)."""
    companded = np.asarray(companded, dtype=np.float64)
    return np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(MU)) / MU


def _mulaw8_encode(values: np.ndarray):
    # Same code assignment as torchaudio.functional.mu_law_encoding: floor((y + 1) / 2 * mu + 0.5).
    codes = np.floor((mulaw_compress(values) + 1.0) / 2.0 * MU + 0.5)
    return codes.astype(np.uint8), None, None


def _mulaw8_decode(encoded: Encoded) -> np.ndarray:
    return mulaw_expand(encoded.payload.astype(np.float64) / MU * 2.0 - 1.0)


def _logmel8_encode(values: np.ndarray):
    low, high = float(values.min()), float(values.max())
    # scale and offset are stored as float32, so quantise with the float32 values the decoder sees.
    offset = np.float32(low)
    scale = np.float32((high - low) / 255.0)
    if scale == 0:  # constant features: every code 0 decodes to the offset exactly
        return np.zeros(values.size, dtype=np.uint8), 0.0, float(offset)
    codes = np.clip(np.round((values.astype(np.float64) - offset) / scale), 0, 255)
    return codes.astype(np.uint8), float(scale), float(offset)


def _logmel8_decode(encoded: Encoded) -> np.ndarray:
    return encoded.payload.astype(np.float32) * np.float32(encoded.scale) + np.float32(encoded.offset)


_FORMATS: dict[str, ExemplarFormat] = {
    fmt.name: fmt for fmt in (
        ExemplarFormat("float32", "waveform", np.float32, False, _float32_encode,
                       lambda encoded: encoded.payload.copy()),
        ExemplarFormat("pcm16", "waveform", np.int16, False, _pcm16_encode, _pcm16_decode),
        ExemplarFormat("mulaw8", "waveform", np.uint8, False, _mulaw8_encode, _mulaw8_decode),
        ExemplarFormat("logmel8", "logmel", np.uint8, True, _logmel8_encode, _logmel8_decode),
    )
}
FORMAT_NAMES: tuple[str, ...] = tuple(_FORMATS)


def get_format(name: str) -> ExemplarFormat:
    """The storage format called `name` (one of FORMAT_NAMES)."""
    try:
        return _FORMATS[name]
    except KeyError:
        raise EdgeclError(f"--memory-format: expected one of {', '.join(FORMAT_NAMES)}, "
                          f"got {name!r}") from None
