"""cusep.wiener against norbert 0.2.1, on small synthetic multichannel mixtures (float64)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cusep import wiener as W
from cusep.spectral import stft

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # norbert imports scipy.ndimage.filters
    import norbert

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SR = 11025


def _scene(channels: int, sources: int = 3, seconds: float = 0.15, peak: float = 1.0,
           seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """A small mixture of tones and noise with per-channel gains and delays, and imperfect
    magnitude estimates of its sources: v (F, B, C, J) real, x (F, B, C) complex."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    t = torch.arange(n, dtype=torch.float64) / SR
    src = []
    for j in range(sources):
        f0 = 180.0 * (j + 1) * 1.26
        tone = sum(torch.sin(2 * torch.pi * h * f0 * t + j) / h for h in range(1, 5))
        tone = tone * (1 + 0.5 * torch.sin(2 * torch.pi * (2 + j) * t))
        gains = 0.4 + 0.6 * torch.rand(channels, generator=gen, dtype=torch.float64)
        chans = [torch.roll(tone, 3 * c * j) * gains[c] for c in range(channels)]
        noise = 0.05 * torch.randn(channels, n, generator=gen, dtype=torch.float64)
        src.append(torch.stack(chans) + noise)
    S = stft(torch.stack(src), n_fft=126, hop=32)  # (J, C, B, F)
    S = S * (peak / S.sum(0).abs().max())
    x = S.sum(0).permute(2, 1, 0)  # (F, B, C)
    noise = 0.6 + 0.8 * torch.rand(S.shape, generator=gen, dtype=torch.float64)
    v = (S.abs() * noise).permute(3, 2, 1, 0)  # (F, B, C, J)
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    return v.to(dtype).contiguous(), x.to(cdt).contiguous()


def _norbert(v: torch.Tensor, x: torch.Tensor, iterations: int, softmask: bool) -> np.ndarray:
    # norbert divides x in place when max|x| > 10: hand it a copy
    return norbert.wiener(v.numpy().copy(), x.numpy().copy(), iterations, softmask)


def _close(a, b, rtol: float = 1e-6) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.all(np.isfinite(a))
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max() / scale


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("iterations", [0, 1, 2])
@pytest.mark.parametrize("softmask", [True, False])
def test_matches_norbert(channels: int, iterations: int, softmask: bool) -> None:
    v, x = _scene(channels, sources=3, seed=channels)
    ref = _norbert(v, x, iterations, softmask)
    out = W.wiener(v, x, iterations=iterations, softmask=softmask, batch_frames=7)
    assert out.dtype == torch.complex128 and out.shape == (*x.shape, 3)
    _close(out, ref)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("softmask", [True, False])
def test_scaling_path_matches_norbert_and_leaves_inputs_alone(channels: int,
                                                              softmask: bool) -> None:
    v, x = _scene(channels, sources=4, peak=300.0, seed=10 + channels)
    assert x.abs().max() > 10  # norbert rescales x here
    v0, x0 = v.clone(), x.clone()
    ref = _norbert(v, x, 2, softmask)
    out = W.wiener(v, x, iterations=2, softmask=softmask)
    _close(out, ref)
    assert torch.equal(x, x0) and torch.equal(v, v0)


def test_mono_estimates_with_stereo_mixture() -> None:
    v, x = _scene(2, sources=2, seed=5)
    v = v.mean(-2, keepdim=True)  # (F, B, 1, J): one spectrogram for both channels
    for iterations in (0, 2):
        _close(W.wiener(v, x, iterations=iterations), _norbert(v, x, iterations, True))


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_batch_dims_equal_a_loop(channels: int) -> None:
    scenes = [_scene(channels, sources=2, peak=p, seed=s) for s, p in enumerate((0.5, 40.0, 3.0,
                                                                                  200.0))]
    v = torch.stack([s[0] for s in scenes]).unflatten(0, (2, 2))  # (2, 2, F, B, C, J)
    x = torch.stack([s[1] for s in scenes]).unflatten(0, (2, 2))
    out = W.wiener(v, x, iterations=2, batch_frames=5)
    assert out.shape == (*x.shape, 2)
    for i in range(2):
        for k in range(2):
            one = W.wiener(v[i, k], x[i, k], iterations=2)
            _close(out[i, k], one, rtol=1e-10)  # batched BLAS/LAPACK may round differently


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("iterations", [0, 2])
@pytest.mark.parametrize("softmask", [True, False])
def test_silence_gives_zeros(channels: int, iterations: int, softmask: bool) -> None:
    x = torch.zeros(6, 9, channels, dtype=torch.complex128)
    v = torch.zeros(6, 9, channels, 2, dtype=torch.float64)
    out = W.wiener(v, x, iterations=iterations, softmask=softmask)
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert torch.count_nonzero(out) == 0


def test_silent_bins_in_a_real_mixture_stay_finite() -> None:
    v, x = _scene(2, sources=3, seed=3)
    x[:, :5] = 0
    v[:, :5] = 0
    out = W.wiener(v, x, iterations=2)
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert torch.count_nonzero(out[:, :5]) == 0
    _close(out, _norbert(v, x, 2, True))


@pytest.mark.parametrize("channels", [1, 2])
def test_softmask_estimates_sum_to_mixture(channels: int) -> None:
    v, x = _scene(channels, sources=4, seed=7)
    y = W.wiener(v, x, iterations=0)
    _close(y.sum(-1), x, rtol=1e-9)


def test_em_estimates_do_not_sum_to_mixture() -> None:
    # EM posteriors are not constrained to add up to x: guard against a "renormalising" bug
    v, x = _scene(1, sources=3, seed=8)
    y = W.wiener(v, x, iterations=2)
    assert (y.sum(-1) - x).abs().max() > 1e-6 * x.abs().max()


def test_float32_runs_in_float32_and_agrees_with_float64() -> None:
    for channels in (1, 2):
        v, x = _scene(channels, sources=3, peak=50.0, seed=4)
        eps = float(torch.finfo(torch.float32).eps)  # the default eps depends on the dtype
        out64 = W.wiener(v, x, iterations=2, eps=eps)
        out32 = W.wiener(v.float(), x.to(torch.complex64), iterations=2)
        assert out32.dtype == torch.complex64
        # 2x2 inversions lose more digits in float32 (norbert's own float32 error is similar)
        _close(out32.to(torch.complex128), out64, rtol=1e-5 if channels == 1 else 5e-4)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_expectation_maximization_matches_norbert(channels: int) -> None:
    v, x = _scene(channels, sources=3, seed=20 + channels)
    y0 = W.softmask(v, x)
    _close(y0, norbert.softmask(v.numpy(), x.numpy()))
    y0_before = y0.clone()
    y, vv, R = W.expectation_maximization(y0, x, iterations=2, batch_frames=6)
    ry, rv, rR = norbert.expectation_maximization(y0.numpy().copy(), x.numpy().copy(), 2)
    assert torch.equal(y0, y0_before)
    _close(y, ry)
    _close(vv, rv)
    _close(R, rR)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_building_blocks_match_norbert(channels: int) -> None:
    v, x = _scene(channels, sources=2, seed=30 + channels)
    y = W.softmask(v, x)
    y_j = y[..., 1]
    eps = float(np.finfo(np.float64).eps)
    _close(W._covariance(y_j), norbert._covariance(y_j.numpy()))
    vj, Rj = W.get_local_gaussian_model(y_j, eps)
    rvj, rRj = norbert.get_local_gaussian_model(y_j.numpy(), eps)
    _close(vj, rvj)
    _close(Rj, rRj[0])  # norbert keeps a leading length-1 axis
    vs, Rs = zip(*(W.get_local_gaussian_model(y[..., j], eps) for j in range(2)), strict=True)
    vs, Rs = torch.stack(vs, -1), torch.stack(Rs, -1)
    Cxx = W.get_mix_model(vs, Rs)
    _close(Cxx, norbert.get_mix_model(vs.numpy(), Rs.numpy()))
    Cxx = Cxx + np.sqrt(eps) * torch.eye(channels, dtype=Cxx.dtype)
    inv = W._invert(Cxx, eps)
    _close(inv, norbert._invert(Cxx.numpy(), eps))
    G = W.wiener_gain(vs[..., 0], Rs[..., 0], inv)
    _close(G, norbert.wiener_gain(vs[..., 0].numpy(), Rs[..., 0].numpy(), inv.numpy()))
    _close(W.apply_filter(x, G), norbert.apply_filter(x.numpy(), G.numpy()))


def test_bad_inputs_raise() -> None:
    v, x = _scene(1, sources=2)
    with pytest.raises(ValueError, match="complex"):
        W.wiener(v, x.real)
    with pytest.raises(ValueError, match="does not match"):
        W.wiener(v[1:], x)
    with pytest.raises(ValueError, match="iterations"):
        W.wiener(v, x, iterations=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_cuda_matches_cpu(channels: int) -> None:
    v, x = _scene(channels, sources=3, peak=50.0, seed=40 + channels)
    ref = W.wiener(v, x, iterations=2)
    out = W.wiener(v.cuda(), x.cuda(), iterations=2)
    assert out.device.type == "cuda"
    _close(out.cpu(), ref, rtol=1e-9)


# ------------------------------------------------- the work layout (frames last) the Separator uses


def _work(v: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """norbert's layout v (..., F, B, C, J), x (..., F, B, C) -> work layout
    v (N, J, C, B, F), x (N, C, B, F) (contiguous, as the Separator has them)."""
    F, B, C, J = v.shape[-4:]
    vw = v.reshape(-1, F, B, C, J).permute(0, 4, 3, 2, 1).contiguous()
    xw = x.reshape(-1, F, B, x.shape[-1]).permute(0, 3, 2, 1).contiguous()
    return vw, xw


@pytest.mark.parametrize("channels", [2, 3])
@pytest.mark.parametrize("iterations", [1, 2])
def test_em_planar_matches_norbert(channels: int, iterations: int) -> None:
    scenes = [_scene(channels, sources=3, peak=p, seed=50 + s) for s, p in enumerate((0.7, 60.0))]
    v, x = torch.stack([s[0] for s in scenes]), torch.stack([s[1] for s in scenes])
    vw, xw = _work(v, x)
    Y = W.em_planar(vw, xw, iterations)
    assert Y.shape == (2, x.shape[2], 3, channels, 2, x.shape[1]) and Y.dtype == torch.float64
    y = W.from_planar(Y)  # (N, J, C, B, F)
    assert y.shape == (2, 3, channels, x.shape[2], x.shape[1])
    for n in range(2):
        ref = _norbert(v[n], x[n], iterations, True)
        _close(y[n].permute(3, 2, 1, 0), ref)


@pytest.mark.parametrize("softmask", [True, False])
def test_mono_gain_matches_norbert(softmask: bool) -> None:
    v, x = _scene(1, sources=3, peak=40.0, seed=60)
    vw, xw = _work(v, x)
    g = W.mono_gain(vw[:, :, 0], xw[:, :1].abs().square(), 2, float(np.finfo(np.float64).eps),
                    softmask)
    assert g.shape == (1, 3, x.shape[1], x.shape[0]) and not g.is_complex()
    y = g * xw[:, None, 0]  # (1, J, B, F)
    _close(y[0].permute(2, 1, 0).unsqueeze(-2), _norbert(v, x, 2, softmask))


def test_work_layout_float32_agrees_with_float64() -> None:
    """The Separator's case: float32, stereo, a mixture far above norbert's rescaling bound."""
    v, x = _scene(2, sources=4, peak=300.0, seed=61)
    vw, xw = _work(v, x)
    eps = float(torch.finfo(torch.float32).eps)
    ref = W.from_planar(W.em_planar(vw, xw, 2, eps=eps))
    out = W.from_planar(W.em_planar(vw.float(), xw.to(torch.complex64), 2))
    assert out.dtype == torch.complex64
    _close(out.to(torch.complex128), ref, rtol=5e-4)
    assert torch.equal(W.softmask_gain(vw, eps), vw / (vw.sum(1, keepdim=True) + eps))
