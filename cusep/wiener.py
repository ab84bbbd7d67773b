"""Multichannel EM Wiener filter: a batched torch port of ``norbert`` 0.2.1, for any device.

Shapes use cusep's letters (README, "Code layout"), with any number of leading batch dims
``...`` (independent signals): ``T`` frames, ``F`` frequency bins, ``C`` channels, ``K``
sources (norbert's F, B and J); the dims are in norbert's order.

- ``v``: real (..., T, F, {1, C}, K) magnitude estimates of the sources;
- ``x``: complex (..., T, F, C) mixture STFT;
- ``y``: complex (..., T, F, C, K) source STFT estimates;
- ``R``: complex (..., F, C, C, K) spatial covariance matrices.

Everything runs in the dtype of ``x`` (complex64 or complex128; ``v`` is cast to its real dtype)
and on its device, with norbert's defaults: eps = machine epsilon of that dtype, sqrt(eps) added
to the mixture covariance, x and the initial estimates scaled by 1 / max(1, max|x| / 10) per
signal during the EM (here on copies: the caller's tensors are never modified).

Internally the EM works in layouts with the frames last and contiguous (the iSTFT's order), so
that sums over frames and broadcasts over sources and channels vectorise, and everything stays
real where the operands are: one channel takes a closed form that never forms a complex
intermediate (covariances are scalars, so each iteration only updates real source powers and
the filter is a real gain); two channels keep the estimates as real and imaginary planes and do
the 2x2 algebra as batched real matrix products per bin; more channels use ``torch.linalg.pinv``
like norbert, ``batch_frames`` bounding the memory of its filtering step.

Callers that go on working on the estimates (:class:`cusep.separate.Separator`) use the work
layout directly: :func:`softmask_gain` and :func:`mono_gain` give real gains g (N, K, {1, C}, F,
T) with y = g x, :func:`em_planar` planar estimates (N, F, K, C, 2, T) and :func:`from_planar`
turns those into complex (N, K, C, F, T).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _default_eps(x: torch.Tensor, eps: float | None) -> float:
    """norbert's default: the machine epsilon of the real dtype of ``x``."""
    return torch.finfo(x.real.dtype).eps if eps is None else float(eps)


def _ratio_mask(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Soft mask v / (eps + sum_j v). (..., K) -> (..., K)."""
    return v / (v.sum(-1, keepdim=True) + eps)


def gain_times(gain: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Real gain times complex x, shapes broadcast -> complex, contiguous.

    Real and imaginary parts are written straight into the output's real view: the gain is never
    promoted to a complex tensor and no kernel runs with a 2-long inner loop (both are slow).
    """
    xr = torch.view_as_real(x)
    # numpy's broadcast rule: torch.broadcast_shapes imports sympy on first use (0.5 s)
    out = torch.empty(np.broadcast_shapes(tuple(gain.shape), tuple(x.shape)), dtype=x.dtype,
                      device=x.device)
    o = torch.view_as_real(out)
    torch.mul(gain, xr[..., 0], out=o[..., 0])
    torch.mul(gain, xr[..., 1], out=o[..., 1])
    return out


def _times_mix(gain: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Real gain (..., T, F, {1, C}, K) times complex x (..., T, F, C) -> complex
    (..., T, F, C, K)."""
    return gain_times(gain, x.unsqueeze(-1))


def softmask(v: torch.Tensor, x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Ratio-mask separation (norbert ``softmask`` without logit compression).

    v: real (..., T, F, {1, C}, K); x: complex (..., T, F, C) -> complex (..., T, F, C, K).
    """
    eps = _default_eps(x, eps)
    return _times_mix(_ratio_mask(v.to(x.real.dtype), eps), x)


def _covariance(y_j: torch.Tensor) -> torch.Tensor:
    """Empirical covariance y_j y_j^H per TF bin. complex (..., T, F, C) -> (..., T, F, C, C)."""
    return y_j.unsqueeze(-1) * y_j.conj().unsqueeze(-2)


def _local_gaussian_models(y: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PSDs and spatial covariances of all sources at once.

    y: complex (..., T, F, C, K) -> v real (..., T, F, K), R complex (..., F, C, C, K).
    """
    yr = torch.view_as_real(y)
    v = yr.square().sum(-1).mean(-2)
    weight = v.sum(-3) + eps  # (..., F, K)
    R = torch.einsum("...fbij,...fbkj->...bikj", y, y.conj())
    R = R / weight.unsqueeze(-2).unsqueeze(-2)
    return v, R


def get_local_gaussian_model(
    y_j: torch.Tensor, eps: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local Gaussian model of one source.

    y_j: complex (..., T, F, C) -> v_j real (..., T, F), R_j complex (..., F, C, C).
    """
    v, R = _local_gaussian_models(y_j.unsqueeze(-1), eps)
    return v[..., 0], R[..., 0]


def get_mix_model(v: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Mixture covariance sum_j v_j R_j.

    v (..., T, F, K); R (..., F, C, C, K) -> (..., T, F, C, C).
    """
    return torch.einsum("...fbj,...bikj->...fbik", v.to(R.dtype), R)


def _invert(M: torch.Tensor, eps: float) -> torch.Tensor:
    """norbert's inverse: 1 / (M + eps) for 1x1, closed form for 2x2 (no eps), pinv otherwise.

    M: (..., C, C) -> (..., C, C).
    """
    C = M.shape[-1]
    if C == 1:
        return 1.0 / (M + eps)
    if C == 2:
        a, b = M[..., 0, 0], M[..., 0, 1]
        c, d = M[..., 1, 0], M[..., 1, 1]
        inv_det = 1.0 / (a * d - b * c)
        rows = (torch.stack((d, -b), -1), torch.stack((-c, a), -1))
        return torch.stack(rows, -2) * inv_det[..., None, None]
    return torch.linalg.pinv(M, rtol=eps)


def wiener_gain(v_j: torch.Tensor, R_j: torch.Tensor, inv_Cxx: torch.Tensor) -> torch.Tensor:
    """Wiener gain v_j R_j inv(Cxx) of one source.

    v_j real (..., T, F); R_j (..., F, C, C); inv_Cxx (..., T, F, C, C) -> (..., T, F, C, C).
    """
    return (R_j.unsqueeze(-4) @ inv_Cxx) * v_j[..., None, None]


def apply_filter(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Filter the mixture: W x per TF bin.

    x (..., T, F, C); W (..., T, F, C, C) -> (..., T, F, C).
    """
    return (W @ x.unsqueeze(-1)).squeeze(-1)


def _em_mono(
    p: torch.Tensor, x2: torch.Tensor, iterations: int, eps: float, keep_v: bool = False,
    sources: int = 1, frames: int = -1,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One-channel EM on real powers (closed form of norbert's EM for C = 1), in place.

    Any layout with the signals first: p (N, ...) powers |y|^2 of the current estimates with
    the sources on dim ``sources`` and the frames on dim ``frames`` (the work layout (N, K, F,
    T) by default; the one with the bins last, (N, T, K, F), suits norbert's), overwritten by
    the gain; x2 |x|^2, broadcastable to p (1 on the sources dim). Returns the real gain g (the
    storage of p) with y = g x, the v of the last iteration when ``keep_v`` (else None), both
    shaped as p, and its R (real: the 1x1 spatial covariances), shaped as p with 1 frame.
    """
    # norbert: inv(Cxx) = 1 / ((sum_j v_j R_j + sqrt(eps)) + eps)
    reg = math.sqrt(eps) + eps
    v, r = None, p.new_zeros(p.sum(frames, keepdim=True).shape)
    for it in range(iterations):
        s = p.sum(frames, keepdim=True)
        r = s / (s + eps)
        if keep_v and it + 1 == iterations:
            v = p.clone()
        g = p.mul_(r)  # v_j R_j
        g /= g.sum(sources, keepdim=True) + reg
        if it + 1 < iterations:
            p = g.square_().mul_(x2)
    return p, v, r


def power(y: torch.Tensor) -> torch.Tensor:
    """|y|^2 as re^2 + im^2, contiguous in the order of y's dims. complex (...) -> real (...)."""
    yr = torch.view_as_real(y)
    out = torch.empty(y.shape, dtype=yr.dtype, device=y.device)
    return torch.square(yr[..., 0], out=out).addcmul_(yr[..., 1], yr[..., 1])


def _em_multi(
    y: torch.Tensor, x: torch.Tensor, iterations: int, eps: float, batch_frames: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """norbert's EM for C >= 1 channels with full covariances, frames processed in batches.

    y: complex (N, T, F, C, K); x: complex (N, T, F, C) -> y, v (N, T, F, K), R (N, F, C, C, K).
    """
    N, T, F, C, K = y.shape
    v = y.new_zeros((N, T, F, K), dtype=x.real.dtype)
    R = y.new_zeros((N, F, C, C, K))
    eye = torch.eye(C, dtype=y.dtype, device=y.device) * math.sqrt(eps)
    for _ in range(iterations):
        v, R = _local_gaussian_models(y, eps)
        out = torch.empty_like(y)
        for t0 in range(0, T, batch_frames):
            sl = slice(t0, t0 + batch_frames)
            vb = v[:, sl]
            inv = _invert(get_mix_model(vb, R) + eye, eps)
            z = apply_filter(x[:, sl], inv)  # inv(Cxx) x, shared by all sources
            yb = torch.einsum("nbikj,nfbk->nfbij", R, z)
            out[:, sl] = yb * vb.unsqueeze(-2)
        y = out
    return y, v, R


def planar(x: torch.Tensor) -> torch.Tensor:
    """Mixture complex (N, C, F, T) -> planar real (N, F, C, 2, T) (dim 3: real, imaginary)."""
    return torch.view_as_real(x).permute(0, 2, 1, 4, 3).contiguous()


_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def from_planar(Y: torch.Tensor) -> torch.Tensor:
    """Planar estimates real (N, F, K, C, 2, T) -> complex (N, K, C, F, T) (the iSTFT's layout).

    One pass: frames stay the contiguous inner dim on both sides.
    """
    N, F, K, C, _, T = Y.shape
    out = torch.empty((N, K, C, F, T), dtype=_COMPLEX[Y.dtype], device=Y.device)
    o = torch.view_as_real(out)
    o[..., 0].copy_(Y[..., 0, :].permute(0, 2, 3, 1, 4))
    o[..., 1].copy_(Y[..., 1, :].permute(0, 2, 3, 1, 4))
    return out


def _em_stereo(
    Y: torch.Tensor, X: torch.Tensor, iterations: int, eps: float,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """norbert's EM for C = 2 in real arithmetic as batched small matrix products, updating
    ``Y`` in place.

    Planar work layout: Y real (N, F, K, 2, 2, T) estimates, dims (bin, source, channel,
    re/im, frame), overwritten; X real (N, F, 2, 2, T) mixture. Per bin, the four planes
    (y0 re, y0 im, y1 re, y1 im) of every source are rows of a (4, T) matrix, so the
    statistics over frames are one Gram product, sum_j v_j R_j one product, and the new
    estimates v_j R_j inv(Cxx) x one product of real 4x4 blocks with the planes of inv(Cxx) x.
    The Hermitian covariances are kept as their real diagonal and the real and imaginary parts
    of one off-diagonal term; no complex tensor is formed. ``scale`` (N, 1, 1, 1): the last
    iteration's estimates are multiplied by it. Returns v real (N, F, K, T) and (R00, R11, R01
    real, R01 imag), each (N, F, K), of the last iteration.
    """
    N, F, K, _, _, T = Y.shape
    v = Y.new_zeros((N, F, K, T))
    Rs = tuple(Y.new_zeros((N, F, K)) for _ in range(4))
    reg = math.sqrt(eps)
    (x0r, x0i), (x1r, x1i) = X[:, :, 0].unbind(2), X[:, :, 1].unbind(2)  # (N, F, T)
    rows = Y.view(N * F * K, 4, T)  # y0 re, y0 im, y1 re, y1 im
    planes = rows.view(N, F, K, 4, T)
    for it in range(iterations):
        G = torch.bmm(rows, rows.transpose(1, 2)).view(N, F, K, 4, 4)  # sums over frames
        P0 = G[..., 0, 0] + G[..., 1, 1]  # sum_f |y_0|^2: (N, F, K)
        P1 = G[..., 2, 2] + G[..., 3, 3]
        w = (P0 + P1) / 2 + eps  # sum_f v + eps
        Rs = (P0 / w, P1 / w, (G[..., 0, 2] + G[..., 1, 3]) / w,  # y_0 conj(y_1)
              (G[..., 1, 2] - G[..., 0, 3]) / w)
        R00, R11, R01r, R01i = Rs
        v = torch.square(planes[:, :, :, 0])
        for k in (1, 2, 3):
            v.addcmul_(planes[:, :, :, k], planes[:, :, :, k])
        v.mul_(0.5)  # (|y_0|^2 + |y_1|^2) / 2: (N, F, K, T)
        # Cxx = sum_j v_j R_j + sqrt(eps) I, then z = inv(Cxx) x (shared by all sources)
        R = torch.stack(Rs, 2).view(N * F, 4, K)
        c00, c11, c01r, c01i = torch.bmm(R, v.view(N * F, K, T)).view(N, F, 4, T).unbind(2)
        c00, c11 = c00 + reg, c11 + reg
        inv_det = 1.0 / (c00 * c11 - (c01r.square() + c01i.square()))
        z = torch.empty_like(X.view(N, F, 4, T))
        for k, (c, x, terms) in enumerate((
            (c11, x0r, ((c01r, x1r, -1), (c01i, x1i, 1))),  # c11 x0 - c01 x1
            (c11, x0i, ((c01r, x1i, -1), (c01i, x1r, -1))),
            (c00, x1r, ((c01r, x0r, -1), (c01i, x0i, -1))),  # c00 x1 - conj(c01) x0
            (c00, x1i, ((c01r, x0i, -1), (c01i, x0r, 1))),
        )):
            zk = torch.mul(c, x, out=z[:, :, k])
            for a, b, sign in terms:
                zk.addcmul_(a, b, value=sign)
        z.mul_(inv_det.unsqueeze(2))  # (N, F, 4, T)
        del c00, c11, c01r, c01i, inv_det
        # y_j = v_j R_j z: y_0 = r00 z0 + r01 z1, y_1 = conj(r01) z0 + r11 z1, as real 4x4
        zero = torch.zeros_like(R00)
        A = torch.stack((
            torch.stack((R00, zero, R01r, -R01i), -1),
            torch.stack((zero, R00, R01i, R01r), -1),
            torch.stack((R01r, R01i, R11, zero), -1),
            torch.stack((-R01i, R01r, zero, R11), -1),
        ), -2)  # (N, F, K, 4, 4)
        torch.bmm(A.view(N * F, K * 4, 4), z.view(N * F, 4, T), out=Y.view(N * F, K * 4, T))
        vs = v if scale is None or it + 1 < iterations else v * scale
        planes.mul_(vs.unsqueeze(3))
    return v, Rs


def _stereo_R(Rs: tuple[torch.Tensor, ...], dtype: torch.dtype) -> torch.Tensor:
    """(R00, R11, R01 real, R01 imag), each (N, F, K) -> complex R (N, F, 2, 2, K)."""
    R00, R11, R01r, R01i = Rs
    r01 = torch.complex(R01r, R01i)
    return torch.stack((R00.to(dtype), r01, r01.conj(), R11.to(dtype)), -2).unflatten(-2, (2, 2))


def _norbert_to_planar(y: torch.Tensor) -> torch.Tensor:
    """complex (N, T, F, C, K) -> planar real (N, F, K, C, 2, T)."""
    return torch.view_as_real(y).permute(0, 2, 4, 3, 5, 1).contiguous()


def _planar_to_norbert(Y: torch.Tensor) -> torch.Tensor:
    """planar real (N, F, K, C, 2, T) -> complex (N, T, F, C, K)."""
    N, F, K, C, _, T = Y.shape
    out = torch.empty((N, T, F, C, K), dtype=_COMPLEX[Y.dtype], device=Y.device)
    o = torch.view_as_real(out)
    o[..., 0].copy_(Y[..., 0, :].permute(0, 4, 1, 3, 2))
    o[..., 1].copy_(Y[..., 1, :].permute(0, 4, 1, 3, 2))
    return out


def _em_full(
    y: torch.Tensor, x: torch.Tensor, iterations: int, eps: float, batch_frames: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-covariance EM in norbert's layout: elementwise 2x2 for stereo, torch.linalg else.

    y: complex (N, T, F, C, K); x: complex (N, T, F, C) -> y, v (N, T, F, K), R (N, F, C, C, K).
    """
    if x.shape[-1] != 2:
        return _em_multi(y, x, iterations, eps, batch_frames)
    Y = _norbert_to_planar(y)
    v, Rs = _em_stereo(Y, planar(x.permute(0, 3, 2, 1)), iterations, eps)
    return _planar_to_norbert(Y), v.permute(0, 3, 1, 2), _stereo_R(Rs, x.dtype)


def _rescale(x: torch.Tensor) -> torch.Tensor:
    """norbert's rescaling for numerical stability: m = max(1, max|x| / 10) per signal.

    x complex (N, ...) -> real (N, 1, ..., 1).
    """
    dims = tuple(range(1, x.dim()))
    return (x.abs().amax(dim=dims, keepdim=True) / 10).clamp_(min=1.0)


def mono_gain(v: torch.Tensor, x2: torch.Tensor, iterations: int, eps: float | None = None,
              softmask: bool = True, sources: int = 1, frames: int = -1) -> torch.Tensor:
    """One-channel Wiener/EM as a real gain: y = g x.

    v: real (N, K, F, T) magnitudes (or another layout, as for :func:`_em_mono`); x2: real |x|^2
    (:func:`power`) broadcastable to v (N, 1, F, T), modified: divided by norbert's m^2.
    Returns g real, shaped as v (contiguous). ``iterations`` >= 1; eps: default the machine
    epsilon of v's dtype.
    """
    eps = torch.finfo(v.dtype).eps if eps is None else float(eps)
    dims = tuple(range(1, x2.dim()))
    m2 = (x2.amax(dim=dims, keepdim=True) / 100).clamp_(min=1.0)  # m^2: (N, 1, ...)
    x2 /= m2
    if softmask:  # p = (v / (eps + sum_j v))^2 |x / m|^2
        scale = x2.sqrt() / (v.sum(sources, keepdim=True) + eps)
    else:  # p = (v / m)^2
        scale = m2.rsqrt()
    p = torch.empty(v.shape, dtype=v.dtype, device=v.device)  # contiguous whatever v's strides
    torch.mul(v, scale, out=p).square_()
    g, _, _ = _em_mono(p, x2, iterations, eps, sources=sources, frames=frames)
    return g


def softmask_gain(v: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Soft mask in the work layout: v / (eps + sum_j v). real (N, K, ...) -> (N, K, ...).

    eps: default the machine epsilon of v's dtype (norbert's).
    """
    eps = torch.finfo(v.dtype).eps if eps is None else float(eps)
    return v / (v.sum(1, keepdim=True) + eps)


def em_planar(v: torch.Tensor, x: torch.Tensor, iterations: int, eps: float | None = None,
              batch_frames: int = 200) -> torch.Tensor:
    """Multichannel Wiener/EM from the soft-mask estimate, in the planar work layout.

    v: real (N, K, {1, C}, F, T) magnitudes; x: complex (N, C, F, T) mixture, C >= 2 ->
    planar estimates real (N, F, K, C, 2, T) (dim 4: real, imaginary part), to go on working
    in; :func:`from_planar` gives the complex (N, K, C, F, T). ``batch_frames``: frames per
    filtering batch for C > 2 (bounded memory; stereo makes no large temporaries).
    """
    eps = _default_eps(x, eps)
    return _em_planar(softmask_gain(v.to(x.real.dtype), eps), planar(x), iterations, eps,
                      batch_frames)


def _em_planar(gain: torch.Tensor, src: torch.Tensor, iterations: int, eps: float,
               batch_frames: int, mix: torch.Tensor | None = None) -> torch.Tensor:
    """EM from the estimate gain * src, rescaled as norbert, in the planar work layout.

    gain real (N, K, {1, C}, F, T); src planar (N, F, C, 2, T) (the mixture unless ``mix``, the
    planar mixture, is given) -> planar estimates (N, F, K, C, 2, T).
    """
    xp = src if mix is None else mix
    N, C = xp.shape[0], xp.shape[2]
    m = xp.square().sum(3).amax(dim=(1, 2, 3)).sqrt_().div_(10).clamp_(min=1.0)  # (N,)
    m4 = m.view(N, 1, 1, 1)
    g = gain.permute(0, 3, 1, 2, 4).unsqueeze(4)  # (N, F, K, {1, C}, 1, T)
    scaled = (src / m.view(N, 1, 1, 1, 1)).unsqueeze(2)  # (N, F, 1, C, 2, T)
    Y = src.new_empty((N, xp.shape[1], gain.shape[1], C, 2, xp.shape[-1]))
    torch.mul(g, scaled, out=Y)
    if C == 2:
        _em_stereo(Y, xp / m.view(N, 1, 1, 1, 1), iterations, eps, scale=m4)
        return Y
    x = torch.view_as_complex((xp / m.view(N, 1, 1, 1, 1)).movedim(3, -1).contiguous())
    y, _, _ = _em_multi(_planar_to_norbert(Y), x.permute(0, 3, 1, 2), iterations, eps,
                        batch_frames)
    return _norbert_to_planar(y).mul_(m.view(N, 1, 1, 1, 1, 1))


def _check(v: torch.Tensor, x: torch.Tensor) -> None:
    if not x.is_complex():
        raise ValueError(f"x must be a complex STFT, got dtype {x.dtype}")
    if v.is_complex():
        raise ValueError("v must be real magnitude estimates, got a complex tensor")
    if x.dim() < 3 or v.dim() != x.dim() + 1:
        raise ValueError(
            f"expected v (..., T, F, C, K) and x (..., T, F, C), got {tuple(v.shape)} "
            f"and {tuple(x.shape)}"
        )
    if v.shape[:-2] != x.shape[:-1] or v.shape[-2] not in (1, x.shape[-1]):
        raise ValueError(
            f"v {tuple(v.shape)} does not match x {tuple(x.shape)}: v needs the leading, "
            "frame and bin dims of x and 1 or C channels"
        )


def expectation_maximization(
    y: torch.Tensor,
    x: torch.Tensor,
    iterations: int = 2,
    eps: float | None = None,
    batch_frames: int = 200,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """norbert's EM refinement of source estimates (no rescaling; ``wiener`` does that).

    y: complex (..., T, F, C, K) initial estimates; x: complex (..., T, F, C) mixture.
    Returns y (..., T, F, C, K), v real (..., T, F, K), R complex (..., F, C, C, K).
    Inputs are not modified.
    """
    eps = _default_eps(x, eps)
    lead, (T, F, C), K = x.shape[:-3], x.shape[-3:], y.shape[-1]
    xf = x.reshape(-1, T, F, C)
    yf = y.reshape(-1, T, F, C, K)
    if C == 1 and iterations > 0:
        # bins last, (N, T, K, F): norbert's order but for the sources, so no transposing copy
        x2 = power(xf[..., 0]).unsqueeze(2)  # (N, T, 1, F)
        p = power(yf[..., 0, :].transpose(-1, -2))  # (N, T, K, F)
        g, vf, r = _em_mono(p, x2, iterations, eps, keep_v=True, sources=2, frames=1)
        yf = _times_mix(g.transpose(-1, -2).unsqueeze(-2), xf)
        vf = vf.transpose(-1, -2)
        Rf = r[:, 0].transpose(-1, -2).to(x.dtype)[..., None, None, :]  # (N, F, 1, 1, K)
    elif iterations > 0:
        yf, vf, Rf = _em_full(yf, xf, iterations, eps, batch_frames)
    else:
        vf = x.real.new_zeros((xf.shape[0], T, F, K))
        Rf = x.new_zeros((xf.shape[0], F, C, C, K))
    return yf.reshape(*lead, T, F, C, K), vf.reshape(*lead, T, F, K), Rf.reshape(*lead, F, C, C, K)


def wiener(
    v: torch.Tensor,
    x: torch.Tensor,
    iterations: int = 2,
    softmask: bool = True,
    eps: float | None = None,
    batch_frames: int = 200,
) -> torch.Tensor:
    """Wiener/EM separation, equal to ``norbert.wiener(v, x, iterations, softmask, eps)``.

    v: real (..., frames, bins, {1, channels}, sources) magnitude estimates;
    x: complex (..., frames, bins, channels) mixture STFT
    -> complex (..., frames, bins, channels, sources). Leading dims are independent signals
    (each gets its own rescaling). ``iterations=0`` is the initial estimate only (soft mask, or
    the magnitudes with the mixture phase when ``softmask`` is False). ``x`` is never modified.
    """
    _check(v, x)
    if iterations < 0 or batch_frames < 1:
        raise ValueError(f"need iterations >= 0 and batch_frames >= 1, got {iterations}, "
                         f"{batch_frames}")
    eps = _default_eps(x, eps)
    v = v.to(x.real.dtype)
    lead, (T, F, C), K = x.shape[:-3], x.shape[-3:], v.shape[-1]
    xf = x.reshape(-1, T, F, C)
    vf = v.reshape(-1, T, F, v.shape[-2], K)

    if iterations == 0:
        # the initial estimate y = gain * src: the soft mask times x, or |v| with the mixture
        # phase (angle 0 where x == 0, as numpy)
        if softmask:
            return _times_mix(_ratio_mask(vf, eps), xf).reshape(*lead, T, F, C, K)
        phase = torch.polar(torch.ones_like(xf.real), torch.angle(xf))
        return _times_mix(vf, phase).reshape(*lead, T, F, C, K)
    vw = vf.permute(0, 4, 3, 2, 1)  # work layout (N, K, {1, C}, F, T)
    xw = xf.permute(0, 3, 2, 1)  # (N, C, F, T)
    if C == 1:  # work on real powers only, y = g x at the end, bins last: (N, T, K, F)
        g = mono_gain(vf[..., 0, :].transpose(-1, -2), power(xf[..., 0]).unsqueeze(2),
                      iterations, eps, softmask, sources=2, frames=1)
        y = _times_mix(g.transpose(-1, -2).unsqueeze(-2), xf)
    elif softmask:
        y = _planar_to_norbert(_em_planar(softmask_gain(vw, eps), planar(xw), iterations, eps,
                                          batch_frames))
    else:
        phase = planar(torch.polar(torch.ones_like(xw.real), torch.angle(xw)))
        y = _planar_to_norbert(_em_planar(vw, phase, iterations, eps, batch_frames,
                                          mix=planar(xw)))
    return y.reshape(*lead, T, F, C, K)
