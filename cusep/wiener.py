"""Multichannel EM Wiener filter: a batched torch port of ``norbert`` 0.2.1, for any device.

Shapes follow norbert with any number of leading batch dims ``...`` (independent signals):
``F`` frames, ``B`` frequency bins, ``C`` channels, ``J`` sources.

- ``v``: real (..., F, B, {1, C}, J) magnitude estimates of the sources;
- ``x``: complex (..., F, B, C) mixture STFT;
- ``y``: complex (..., F, B, C, J) source STFT estimates;
- ``R``: complex (..., B, C, C, J) spatial covariance matrices.

Everything runs in the dtype of ``x`` (complex64 or complex128) and ``v`` is cast to its real
dtype. One channel takes a fast path that never forms complex intermediates: the covariances are
scalars, so each EM iteration only updates real source powers and the filter is a real gain.
"""

from __future__ import annotations

import math

import torch


def _default_eps(x: torch.Tensor, eps: float | None) -> float:
    """norbert's default: the machine epsilon of the real dtype of ``x``."""
    return torch.finfo(x.real.dtype).eps if eps is None else float(eps)


def _ratio_mask(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Soft mask v / (eps + sum_j v). (..., J) -> (..., J)."""
    return v / (v.sum(-1, keepdim=True) + eps)


def _times_mix(gain: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Real gain (..., F, B, {1, C}, J) times complex x (..., F, B, C) -> complex (..., F, B, C, J).

    Real and imaginary parts are written straight into the output's real view: the gain is never
    promoted to a complex tensor and no kernel runs with a 2-long inner loop (both are slow).
    """
    xr = torch.view_as_real(x).unsqueeze(-2)
    shape = torch.broadcast_shapes(gain.shape, xr.shape[:-1])
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    o = torch.view_as_real(out)
    torch.mul(gain, xr[..., 0], out=o[..., 0])
    torch.mul(gain, xr[..., 1], out=o[..., 1])
    return out


def softmask(v: torch.Tensor, x: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Ratio-mask separation (norbert ``softmask`` without logit compression).

    v: real (..., F, B, {1, C}, J); x: complex (..., F, B, C) -> complex (..., F, B, C, J).
    """
    eps = _default_eps(x, eps)
    return _times_mix(_ratio_mask(v.to(x.real.dtype), eps), x)


def _covariance(y_j: torch.Tensor) -> torch.Tensor:
    """Empirical covariance y_j y_j^H per TF bin. complex (..., F, B, C) -> (..., F, B, C, C)."""
    return y_j.unsqueeze(-1) * y_j.conj().unsqueeze(-2)


def _local_gaussian_models(y: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PSDs and spatial covariances of all sources at once.

    y: complex (..., F, B, C, J) -> v real (..., F, B, J), R complex (..., B, C, C, J).
    """
    yr = torch.view_as_real(y)
    v = yr.square().sum(-1).mean(-2)
    weight = v.sum(-3) + eps  # (..., B, J)
    R = torch.einsum("...fbij,...fbkj->...bikj", y, y.conj())
    R = R / weight.unsqueeze(-2).unsqueeze(-2)
    return v, R


def get_local_gaussian_model(
    y_j: torch.Tensor, eps: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local Gaussian model of one source.

    y_j: complex (..., F, B, C) -> v_j real (..., F, B), R_j complex (..., B, C, C).
    """
    v, R = _local_gaussian_models(y_j.unsqueeze(-1), eps)
    return v[..., 0], R[..., 0]


def get_mix_model(v: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Mixture covariance sum_j v_j R_j. v (..., F, B, J), R (..., B, C, C, J) -> (..., F, B, C, C)."""
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

    v_j real (..., F, B); R_j (..., B, C, C); inv_Cxx (..., F, B, C, C) -> (..., F, B, C, C).
    """
    return (R_j.unsqueeze(-4) @ inv_Cxx) * v_j[..., None, None]


def apply_filter(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Filter the mixture: W x per TF bin. x (..., F, B, C); W (..., F, B, C, C) -> (..., F, B, C)."""
    return (W @ x.unsqueeze(-1)).squeeze(-1)


def _em_mono(
    p: torch.Tensor, x2: torch.Tensor, iterations: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-channel EM on real powers (closed form of norbert's EM for C = 1).

    Source-major layout, so that sums over sources and frames and all broadcasts run along
    contiguous bins. p: (J, N, F, B) powers |y|^2 of the current estimates (not modified);
    x2: (N, F, B) |x|^2. Returns the real gain g (J, N, F, B) with y = g x, and the v (J, N, F, B)
    and R (J, N, B) (real: the 1x1 spatial covariances) of the last iteration.
    """
    # norbert: inv(Cxx) = 1 / ((sum_j v_j R_j + sqrt(eps)) + eps)
    reg = math.sqrt(eps) + eps
    g = r = p
    for it in range(iterations):
        s = p.sum(-2)  # (J, N, B)
        r = s / (s + eps)
        g = p * r.unsqueeze(-2)
        g /= g.sum(0) + reg
        if it + 1 < iterations:
            p = torch.mul(g, g, out=p if it > 0 else None).mul_(x2)
    return g, p, r


def _em_multi(
    y: torch.Tensor, x: torch.Tensor, iterations: int, eps: float, batch_frames: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """norbert's EM for C >= 1 channels with full covariances, frames processed in batches.

    y: complex (N, F, B, C, J); x: complex (N, F, B, C) -> y, v (N, F, B, J), R (N, B, C, C, J).
    """
    N, F, B, C, J = y.shape
    v = y.new_zeros((N, F, B, J), dtype=x.real.dtype)
    R = y.new_zeros((N, B, C, C, J))
    eye = torch.eye(C, dtype=y.dtype, device=y.device) * math.sqrt(eps)
    for _ in range(iterations):
        v, R = _local_gaussian_models(y, eps)
        out = torch.empty_like(y)
        for t0 in range(0, F, batch_frames):
            sl = slice(t0, t0 + batch_frames)
            vb = v[:, sl]
            inv = _invert(get_mix_model(vb, R) + eye, eps)
            z = apply_filter(x[:, sl], inv)  # inv(Cxx) x, shared by all sources
            yb = torch.einsum("nbikj,nfbk->nfbij", R, z)
            out[:, sl] = yb * vb.unsqueeze(-2)
        y = out
    return y, v, R


def _check(v: torch.Tensor, x: torch.Tensor) -> None:
    if not x.is_complex():
        raise ValueError(f"x must be a complex STFT, got dtype {x.dtype}")
    if v.is_complex():
        raise ValueError("v must be real magnitude estimates, got a complex tensor")
    if x.dim() < 3 or v.dim() != x.dim() + 1:
        raise ValueError(
            f"expected v (..., F, B, C, J) and x (..., F, B, C), got {tuple(v.shape)} "
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

    y: complex (..., F, B, C, J) initial estimates; x: complex (..., F, B, C) mixture.
    Returns y (..., F, B, C, J), v real (..., F, B, J), R complex (..., B, C, C, J).
    Inputs are not modified.
    """
    eps = _default_eps(x, eps)
    lead, (F, B, C), J = x.shape[:-3], x.shape[-3:], y.shape[-1]
    xf = x.reshape(-1, F, B, C)
    yf = y.reshape(-1, F, B, C, J)
    if C == 1 and iterations > 0:
        yr = torch.view_as_real(yf[..., 0, :])
        p = yr.square().sum(-1).permute(3, 0, 1, 2).contiguous()
        x2 = torch.view_as_real(xf[..., 0]).square().sum(-1)
        g, vf, r = _em_mono(p, x2, iterations, eps)
        yf = _times_mix(g.permute(1, 2, 3, 0).unsqueeze(-2), xf)
        vf = vf.permute(1, 2, 3, 0)
        Rf = r.permute(1, 2, 0).to(x.dtype)[..., None, None, :]
    elif iterations > 0:
        yf, vf, Rf = _em_multi(yf, xf, iterations, eps, batch_frames)
    else:
        vf = x.real.new_zeros((xf.shape[0], F, B, J))
        Rf = x.new_zeros((xf.shape[0], B, C, C, J))
    return yf.reshape(*lead, F, B, C, J), vf.reshape(*lead, F, B, J), Rf.reshape(*lead, B, C, C, J)


def wiener(
    v: torch.Tensor,
    x: torch.Tensor,
    iterations: int = 2,
    softmask: bool = True,
    eps: float | None = None,
    batch_frames: int = 200,
) -> torch.Tensor:
    """Wiener/EM separation, numerically equal to ``norbert.wiener(v, x, iterations, softmask, eps)``.

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
    lead, (F, B, C), J = x.shape[:-3], x.shape[-3:], v.shape[-1]
    xf = x.reshape(-1, F, B, C)
    vf = v.reshape(-1, F, B, v.shape[-2], J)

    if iterations == 0 or C > 1:
        if softmask:
            y = _times_mix(_ratio_mask(vf, eps), xf)
        else:  # magnitudes with the mixture phase (angle 0 where x == 0, as numpy)
            phase = torch.polar(torch.ones_like(xf.real), torch.angle(xf))
            y = _times_mix(vf, phase)
        if iterations > 0:
            # norbert rescales for numerical stability: x / m with m = max(1, max|x| / 10)
            m = (xf.abs().amax(dim=(1, 2, 3), keepdim=True) / 10).clamp_(min=1.0)
            y, _, _ = _em_multi(y / m.unsqueeze(-1), xf / m, iterations, eps, batch_frames)
            y = y * m.unsqueeze(-1)
    else:  # one channel with EM: work on real powers only, y = g x at the end
        xr = torch.view_as_real(xf[..., 0])
        x2 = xr[..., 0].square() + xr[..., 1].square()  # (N, F, B)
        m2 = (x2.amax(dim=(1, 2), keepdim=True) / 100).clamp_(min=1.0)  # m^2
        x2 /= m2
        vt = vf[..., 0, :].permute(3, 0, 1, 2)  # (J, N, F, B) view
        p = torch.empty(vt.shape, dtype=vt.dtype, device=vt.device)
        if softmask:  # p = (v / (eps + sum_j v))^2 |x / m|^2
            scale = x2.sqrt() / (vt.sum(0) + eps)
        else:  # p = (v / m)^2
            scale = m2.rsqrt()
        torch.mul(vt, scale, out=p).square_()
        g, _, _ = _em_mono(p, x2, iterations, eps)
        y = _times_mix(g.permute(1, 2, 3, 0).unsqueeze(-2), xf)
    return y.reshape(*lead, F, B, C, J)
