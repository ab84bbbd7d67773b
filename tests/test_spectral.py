"""The one STFT: perfect reconstruction, the paper's sizes, the log grid, magnitude scalings."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from cusep.spectral import (
    MAG_FLOOR,
    SpectralConfig,
    features,
    from_grid,
    interp_axis,
    inverse_log_grid_positions,
    istft,
    log_grid_positions,
    scale_magnitude,
    stft,
    to_grid,
)


def tones(length: int, rate: int = 11025, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Harmonic tones plus noise, (*batch, length) float32."""
    g = torch.Generator().manual_seed(length)
    t = torch.arange(length, dtype=torch.float64) / rate
    x = sum(torch.sin(2 * math.pi * 220 * h * t) / h for h in range(1, 6))
    x = x + 0.1 * torch.randn(*batch, length, generator=g, dtype=torch.float64)
    return (0.3 * x).float()


@pytest.mark.parametrize("length", [1022, 1023, 4096, 11025 * 2 + 7, 65535])
def test_stft_istft_perfect_reconstruction(length):
    x = tones(length, batch=(2, 3))
    spec = stft(x)
    assert spec.shape[:2] == (2, 3) and spec.is_complex()
    y = istft(spec, length)
    assert y.shape == x.shape
    assert (y - x).abs().max() < 1e-5


@pytest.mark.parametrize(("n_fft", "hop"), [(742, 186), (4096, 1024)])
def test_reconstruction_at_other_sizes(n_fft, hop):
    x = tones(20000)
    assert (istft(stft(x, n_fft, hop), 20000, n_fft, hop) - x).abs().max() < 1e-5


@pytest.mark.parametrize(("n_fft", "hop"), [(1022, 256), (4088, 1024), (4088, 1022), (510, 128),
                                          (64, 16), (100, 30)])
@pytest.mark.parametrize("extra", [0, -7, 300])
def test_istft_equals_torch_istft_on_any_spectrum(n_fft, hop, extra):
    """Masked (inconsistent) spectra, frames-innermost layout, shorter and longer lengths."""
    length = 6000 + n_fft
    g = torch.Generator().manual_seed(n_fft + hop)
    spec = stft(tones(length, batch=(2, 3)), n_fft, hop)
    spec = (spec * torch.rand(spec.shape, generator=g)).contiguous()  # (2, 3, F, T), T innermost
    window = torch.hann_window(n_fft, periodic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "padded with zeros" for the longer length
        ref = torch.istft(spec.reshape(6, *spec.shape[-2:]), n_fft, hop, n_fft, window,
                          center=True, length=length + extra).reshape(2, 3, -1)
    out = istft(spec, length + extra, n_fft, hop)
    assert out.shape == ref.shape == (2, 3, length + extra)
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-6)


def test_istft_gradient_equals_torch_istft():
    spec = stft(tones(3000, batch=(2,)), 254, 64).requires_grad_()
    weights = torch.randn(2, 3000, generator=torch.Generator().manual_seed(0))
    (istft(spec, 3000, 254, 64) * weights).sum().backward()
    ours, spec.grad = spec.grad, None
    ref = torch.istft(spec, 254, 64, 254, torch.hann_window(254, periodic=True), center=True,
                      length=3000)
    (ref * weights).sum().backward()
    torch.testing.assert_close(ours, spec.grad, rtol=0, atol=1e-5)


def test_paper_sizes():
    cfg = SpectralConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop, cfg.segment) == (11025, 1022, 256, 65535)
    assert (cfg.bins, cfg.frames, cfg.rows) == (512, 256, 512)
    assert stft(tones(65535)).shape == (512, 256)
    inp, spec = features(tones(65535, batch=(2,)), cfg)
    assert inp.shape == (2, 1, 512, 256)
    assert spec.shape == (2, 512, 256)
    log = SpectralConfig(freq_scale="log")
    assert log.rows == 256
    assert features(tones(65535, batch=(1,)), log)[0].shape == (1, 1, 256, 256)


def test_log_grid_positions_span_and_monotonic():
    pos = log_grid_positions(512, 256)
    inv = inverse_log_grid_positions(512, 256)
    assert pos.shape == (256,) and inv.shape == (512,)
    for p, top in ((pos, 511), (inv, 255)):
        assert p[0].item() == pytest.approx(0, abs=1e-4)
        assert p[-1].item() == pytest.approx(top, abs=1e-3)
        assert (p.diff() > 0).all()
    assert pos.diff()[0] < pos.diff()[-1]  # log spacing: finer at the bottom
    # the two maps are inverses of each other
    rows = interp_axis(inv, pos, dim=0)
    torch.testing.assert_close(rows, torch.arange(256, dtype=torch.float32), atol=0.05, rtol=0)


@pytest.mark.parametrize("rows", [256, 128])
def test_from_grid_inverts_to_grid_for_smooth_spectra(rows):
    cfg = SpectralConfig(freq_scale="log", log_rows=rows)
    f = torch.arange(cfg.bins, dtype=torch.float32)[:, None]
    t = torch.arange(4, dtype=torch.float32)[None, :]
    smooth = 1 + 0.5 * torch.sin(2 * math.pi * f / 700 + t) + 0.3 * torch.exp(-f / 200)
    back = from_grid(to_grid(smooth, cfg), cfg)
    assert to_grid(smooth, cfg).shape == (rows, 4)
    assert back.shape == smooth.shape
    assert ((back - smooth).abs() / smooth.abs()).max() < 1e-2


def test_linear_grid_is_the_identity():
    cfg = SpectralConfig()
    x = torch.rand(3, 512, 8)
    assert to_grid(x, cfg) is x
    assert from_grid(x, cfg) is x


def test_interp_axis_at_integers_and_halves():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4) ** 2
    torch.testing.assert_close(interp_axis(x, torch.tensor([0.0, 2.0]), dim=1), x[:, [0, 2]])
    torch.testing.assert_close(interp_axis(x, torch.tensor([0.5]), dim=0), (x[:1] + x[1:2]) / 2)
    torch.testing.assert_close(interp_axis(x, torch.tensor([-3.0, 9.0]), dim=1), x[:, [0, 3]])


def test_dbnorm_range_and_silence():
    mag = stft(tones(20000, batch=(3,))).abs()
    mag[1] *= 1e-3  # a quiet item is normalised on its own
    out = scale_magnitude(mag, "dbnorm")
    assert out.shape == mag.shape
    assert out.min() >= -1 and out.max() <= 1
    for item in out:
        assert item.min().item() == pytest.approx(-1, abs=1e-6)
        assert item.max().item() == pytest.approx(1, abs=1e-6)
    silent = scale_magnitude(torch.zeros(2, 512, 16), "dbnorm")
    assert torch.isfinite(silent).all()
    assert not silent.any()


def test_dbnorm_is_monotonic_in_the_magnitude():
    mag = torch.logspace(-6, 1, 50).reshape(1, 50, 1).expand(1, 50, 2)
    out = scale_magnitude(mag, "dbnorm")[0, :, 0]
    assert (out.diff() > 0).all()


def test_log_scaling_is_log_of_magnitude_plus_floor():
    mag = stft(tones(8000)).abs()
    torch.testing.assert_close(scale_magnitude(mag, "log"), torch.log(mag + 1e-4))
    assert MAG_FLOOR == 1e-4
    assert torch.isfinite(scale_magnitude(torch.zeros(4, 4), "log")).all()
