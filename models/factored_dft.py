"""The front end's STFT power as a two-stage Cooley-Tukey DFT: two grouped Conv1d's, no FFT op.

A frame of n_fft = N1 * N2 samples is indexed n = N2 * n1 + n2 and its bins k = k1 + N1 * k2, so

    X[k1 + N1 k2] = sum_n2 e^(-2 pi i n2 k2 / N2) e^(-2 pi i n2 k1 / n_fft)
                    sum_n1 x[N2 n1 + n2] w[N2 n1 + n2] e^(-2 pi i n1 k1 / N1).

Stage 1 is the inner sum: the padded waveform is reshaped into N2 polyphase channels (sample
N2 * j + r goes to channel r, position j), and one grouped Conv1d (a group per n2, kernel N1, the
Hann window folded into the kernel, stride hop / N2) gives every frame's N1-point DFTs. A channel
transpose (the FFT's "corner turn") regroups them by k1, and stage 2 is a second grouped Conv1d
(a group per k1, kernel 1) whose weights hold the twiddle factor and the N2-point DFT, for the k2
that reach the last bin a mel filter uses. The power spectrum comes out ordered (k1, k2); the mel
matrix is permuted to match, with zero rows for bins no filter uses.

Per frame this costs 2 N1 n_fft + 4 N1 N2 K2 multiply-accumulates instead of the direct DFT's
2 n_fft bins (about 6x fewer at 44.1 kHz), and ONNX Runtime runs both stages as ordinary Conv
kernels. It needs N2 to divide hop_length (frames must start on a polyphase position):
`factorization` picks the split with the fewest MACs, or None when there is none.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def factored_macs_per_frame(n_fft: int, n1: int, last_bin: int) -> int:
    """Multiply-accumulates of both stages for one frame (the mel MatMul not included)."""
    n2, k2 = n_fft // n1, math.ceil(last_bin / n1)
    return n2 * 2 * n1 * n1 + n1 * 2 * k2 * 2 * n2  # the two Conv weights' sizes


def factorization(n_fft: int, hop_length: int, last_bin: int) -> int | None:
    """N1 of the cheapest split n_fft = N1 * N2 with N1, N2 >= 2 and N2 dividing hop_length, or
    None (n_fft not a product of such factors, e.g. a hop that no divisor of n_fft divides)."""
    splits = [n1 for n1 in range(2, n_fft // 2 + 1)
              if n_fft % n1 == 0 and hop_length % (n_fft // n1) == 0]
    if not splits:
        return None
    return min(splits, key=lambda n1: (factored_macs_per_frame(n_fft, n1, last_bin), n1))


def factored_filterbank(filterbank: torch.Tensor, n1: int, first_bin: int,
                        last_bin: int) -> torch.Tensor:
    """The mel filterbank [n_freqs, n_mels] rearranged to FactoredDft's bin order (k1, k2):
    [N1 * K2, n_mels], zero rows for bins outside [first_bin, last_bin)."""
    k2 = math.ceil(last_bin / n1)
    weights = torch.zeros(n1, k2, filterbank.shape[1], dtype=filterbank.dtype)
    for k in range(first_bin, last_bin):
        weights[k % n1, k // n1] = filterbank[k]
    return weights.reshape(n1 * k2, filterbank.shape[1])


class FactoredDft(nn.Module):
    """Reflect-padded waveform [B, 1, T + n_fft] -> power [B, N1 * K2, frames] in (k1, k2) order
    (see the module doc). Buffers only."""

    def __init__(self, n_fft: int, hop_length: int, n1: int, last_bin: int,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        n2 = n_fft // n1
        if n1 * n2 != n_fft or hop_length % n2:
            raise ValueError(f"factored DFT: N1={n1} must divide n_fft={n_fft} and n_fft/N1 must "
                             f"divide hop_length={hop_length}")
        self.n_fft, self.hop_length, self.n1, self.n2 = n_fft, hop_length, n1, n2
        self.k2 = math.ceil(last_bin / n1)
        self.register_buffer("stage1", self._stage1().to(dtype))
        self.register_buffer("stage2", self._stage2().to(dtype))

    def _stage1(self) -> torch.Tensor:
        """[N2 * 2 * N1, 1, N1]: group n2, outputs (real, imaginary) x k1, taps n1, windowed."""
        n1, n2 = self.n1, self.n2
        taps = torch.arange(n1, dtype=torch.float64)
        phase = 2.0 * math.pi * torch.outer(taps, taps) / n1  # [k1, n1]
        window = torch.hann_window(self.n_fft, periodic=True, dtype=torch.float64)
        window = window.reshape(n1, n2).t()[:, None, :]  # [n2, 1, n1] = w[N2 n1 + n2]
        rows = torch.stack([torch.cos(phase)[None] * window, -torch.sin(phase)[None] * window], 1)
        return rows.reshape(n2 * 2 * n1, 1, n1)

    def _stage2(self) -> torch.Tensor:
        """[N1 * 2 * K2, 2 * N2, 1]: group k1, inputs (real, imaginary) x n2, outputs
        (real, imaginary) x k2; twiddle and N2-point DFT in one matrix per k1."""
        k1 = torch.arange(self.n1, dtype=torch.float64)[:, None, None]
        n2 = torch.arange(self.n2, dtype=torch.float64)[None, :, None]
        k2 = torch.arange(self.k2, dtype=torch.float64)[None, None, :]
        phase = 2.0 * math.pi * (n2 * k1 / self.n_fft + n2 * k2 / self.n2)  # [k1, n2, k2]
        cos, sin = torch.cos(phase), torch.sin(phase)
        # (Yr + i Yi) e^(-i phase): real part Yr cos + Yi sin, imaginary part Yi cos - Yr sin.
        real = torch.cat([cos, sin], 1)  # [k1, 2 n2, k2]
        imag = torch.cat([-sin, cos], 1)
        weights = torch.stack([real, imag], 1).permute(0, 1, 3, 2)  # [k1, 2, k2, 2 n2]
        return weights.reshape(self.n1 * 2 * self.k2, 2 * self.n2, 1)

    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        batch, n1, n2 = padded.shape[0], self.n1, self.n2
        frames = (padded.shape[-1] - self.n_fft) // self.hop_length + 1
        length = (frames - 1) * self.hop_length + self.n_fft  # a multiple of N2
        polyphase = padded[:, 0, :length].reshape(batch, length // n2, n2).transpose(1, 2)
        stage1 = F.conv1d(polyphase, self.stage1, stride=self.hop_length // n2, groups=n2)
        by_k1 = stage1.reshape(batch, n2, 2, n1, frames).permute(0, 3, 2, 1, 4)
        stage2 = F.conv1d(by_k1.reshape(batch, n1 * 2 * n2, frames), self.stage2, groups=n1)
        parts = stage2.reshape(batch, n1, 2, self.k2, frames)
        power = parts[:, :, 0] * parts[:, :, 0] + parts[:, :, 1] * parts[:, :, 1]
        return power.reshape(batch, n1 * self.k2, frames)

    def count_macs(self, output: torch.Tensor) -> int:
        """Multiply-accumulates per example of both stages, for an output of this module."""
        return output.shape[-1] * (self.stage1.numel() + self.stage2.numel())
