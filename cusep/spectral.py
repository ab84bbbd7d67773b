"""The one STFT of cusep: transforms, frequency grids and magnitude scalings (paper Table V).

Shapes: ``...`` is any number of leading dims; ``F`` frequency bins (512 on the linear grid at the
paper's n_fft of 1022), ``T`` frames (256 per 65535-sample segment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

FreqScale = Literal["linear", "log"]
MagScale = Literal["dbnorm", "log"]

MAG_FLOOR = 1e-4
_AMIN = 2.0**-16


@dataclass(frozen=True)
class SpectralConfig:
    """Front-end parameters shared by training, separation and evaluation."""

    sample_rate: int = 11025
    n_fft: int = 1022
    hop: int = 256
    segment: int = 65535
    freq_scale: FreqScale = "linear"
    mag_scale: MagScale = "dbnorm"
    log_rows: int = 256

    def __post_init__(self) -> None:
        if not 1000 <= self.sample_rate <= 192000:
            raise ValueError(f"sample_rate must be in 1000..192000, got {self.sample_rate}")
        if self.n_fft < 16 or self.n_fft % 2:
            raise ValueError(f"n_fft must be even and at least 16, got {self.n_fft}")
        if not 1 <= self.hop <= self.n_fft:
            raise ValueError(f"hop must be in 1..n_fft, got {self.hop}")
        if self.segment < self.n_fft:
            raise ValueError(f"segment must be at least n_fft samples, got {self.segment}")
        if self.freq_scale not in ("linear", "log") or self.mag_scale not in ("dbnorm", "log"):
            raise ValueError(f"unknown freq_scale '{self.freq_scale}' or mag_scale "
                             f"'{self.mag_scale}'")
        if self.log_rows < 2:
            raise ValueError(f"log_rows must be at least 2, got {self.log_rows}")

    @property
    def bins(self) -> int:
        """Linear-frequency bins of the STFT."""
        return self.n_fft // 2 + 1

    @property
    def frames(self) -> int:
        """Frames of one segment (centred STFT)."""
        return self.segment // self.hop + 1

    @property
    def rows(self) -> int:
        """Frequency rows the network sees."""
        return self.bins if self.freq_scale == "linear" else self.log_rows


def stft(x: torch.Tensor, n_fft: int = 1022, hop: int = 256) -> torch.Tensor:
    """Centred STFT with a periodic Hann window. (..., samples) -> complex (..., F, T)."""
    shape = x.shape
    window = torch.hann_window(n_fft, periodic=True, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x.reshape(-1, shape[-1]), n_fft, hop, n_fft, window,
        center=True, pad_mode="reflect", return_complex=True,
    )
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def istft(spec: torch.Tensor, length: int, n_fft: int = 1022, hop: int = 256) -> torch.Tensor:
    """Inverse of :func:`stft` (``torch.istft``'s result, to float rounding; zeros past the
    last frame). complex (..., F, T), any layout -> (..., length).

    The frames stay where the inverse FFT writes them (samples, then frames) and are
    overlap-added in ``ceil(n_fft / hop)`` strided adds, one per hop-long piece of the window:
    1.2-1.5x faster than ``torch.istft``, which copies them out for a general fold.
    """
    shape, frames = spec.shape, spec.shape[-1]
    window = torch.hann_window(n_fft, periodic=True, device=spec.device, dtype=spec.real.dtype)
    x = torch.fft.irfft(spec.reshape(-1, *shape[-2:]), n=n_fft, dim=-2)  # (N, n_fft, T)
    x.mul_(window[:, None])
    pad, pieces = n_fft // 2, -(-n_fft // hop)
    rows = max(frames + pieces - 1, -(-(length + pad) // hop))  # hop-long rows of the output
    out = x.new_zeros(x.shape[0], rows, hop)
    envelope = x.new_zeros(rows, hop)  # the squared windows' sum
    by_sample, square = out.transpose(1, 2), window.square()  # (N, hop, rows)
    for j in range(pieces):
        a, b = j * hop, min((j + 1) * hop, n_fft)
        by_sample[:, :b - a, j:j + frames] += x[:, a:b]
        envelope[j:j + frames, :b - a] += square[a:b]
    env = envelope.view(-1)[pad:pad + length]
    y = out.view(x.shape[0], -1)[:, pad:pad + length] / torch.where(env > 1e-11, env, 1.0)
    return y.reshape(*shape[:-2], length)


def interp_axis(x: torch.Tensor, positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at fractional indices ``positions`` (clamped)."""
    n = x.shape[dim]
    pos = positions.to(device=x.device, dtype=torch.float32).clamp(0, n - 1)
    lo = pos.floor().long().clamp(max=max(n - 2, 0))
    w = (pos - lo).to(x.dtype)
    hi = (lo + 1).clamp(max=n - 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    a, b = x.index_select(dim, lo), x.index_select(dim, hi)
    return a + (b - a) * w.view(shape)


def log_grid_positions(bins: int, rows: int) -> torch.Tensor:
    """Fractional linear-bin index sampled by each log-grid row: y = (21^t - 11) / 10."""
    t = torch.linspace(0, 1, rows, dtype=torch.float64)
    y = (21.0**t - 11.0) / 10.0
    return ((y + 1) / 2 * (bins - 1)).float()


def inverse_log_grid_positions(bins: int, rows: int) -> torch.Tensor:
    """Fractional log-grid row for each linear bin: 2 * log21(10 y + 11) - 1, y in [-1, 1]."""
    y = torch.linspace(-1, 1, bins, dtype=torch.float64)
    r = 2 * torch.log(10 * y + 11) / math.log(21) - 1
    return ((r + 1) / 2 * (rows - 1)).float()


def to_grid(mag: torch.Tensor, config: SpectralConfig) -> torch.Tensor:
    """Linear bins to the network's frequency grid. (..., F, T) -> (..., rows, T)."""
    if config.freq_scale == "linear":
        return mag
    return interp_axis(mag, log_grid_positions(config.bins, config.log_rows), dim=-2)


def from_grid(mask: torch.Tensor, config: SpectralConfig) -> torch.Tensor:
    """Network grid back to linear bins. (..., rows, T) -> (..., F, T)."""
    if config.freq_scale == "linear":
        return mask
    return interp_axis(mask, inverse_log_grid_positions(config.bins, config.log_rows), dim=-2)


def scale_magnitude(mag: torch.Tensor, kind: MagScale) -> torch.Tensor:
    """Network input scaling of a magnitude (..., F, T) (the floor is added here).

    ``dbnorm``: ln(1 + m / amin) / ln(1 + 1 / amin), then each item min-max normalised to [-1, 1].
    ``log``: ln(m).
    """
    m = mag + MAG_FLOOR
    if kind == "log":
        return torch.log(m)
    db = torch.log1p(m / _AMIN) / math.log1p(1 / _AMIN)
    flat = db.flatten(-2)
    lo = flat.amin(-1, keepdim=True).unsqueeze(-1)
    hi = flat.amax(-1, keepdim=True).unsqueeze(-1)
    out = (db - lo) / (hi - lo) * 2 - 1
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def features(mix: torch.Tensor, config: SpectralConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixture waveform (B, samples) -> (network input (B, 1, rows, T), complex STFT (B, F, T))."""
    spec = stft(mix, config.n_fft, config.hop)
    inp = scale_magnitude(to_grid(spec.abs(), config), config.mag_scale)
    return inp.unsqueeze(1), spec
