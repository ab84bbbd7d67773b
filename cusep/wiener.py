"""Multichannel EM Wiener filter: a batched torch port of ``norbert`` 0.2.1, for any device.

Shapes follow norbert with any number of leading batch dims ``...`` (independent signals):
``F`` frames, ``B`` frequency bins, ``C`` channels, ``J`` sources.

- ``v``: real (..., F, B, {1, C}, J) magnitude estimates of the sources;
- ``x``: complex (..., F, B, C) mixture STFT;
- ``y``: complex (..., F, B, C, J) source STFT estimates;
- ``R``: complex (..., B, C, C, J) spatial covariance matrices.

Everything runs in the dtype of ``x`` (complex64 or complex128; ``v`` is cast to its real dtype)
and on its device, with norbert's defaults: eps = machine epsilon of that dtype, sqrt(eps) added
to the mixture covariance, x and the initial estimates scaled by 1 / max(1, max|x| / 10) per
signal during the EM (here on copies: the caller's tensors are never modified).

Internally the EM works in layouts with the bins last and contiguous, so that broadcasts over
sources and channels vectorise. One channel takes a closed form that never forms a complex
intermediate: covariances are scalars, so each iteration only updates real source powers and the
filter is a real gain. Two channels use elementwise closed-form 2x2 algebra; more channels use
``torch.linalg.pinv`` like norbert. ``batch_frames`` bounds the memory of the multichannel
filtering step (the one-channel path needs no temporaries beyond the size of its output).
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
    """Mixture covariance sum_j v_j R_j.

    v (..., F, B, J); R (..., B, C, C, J) -> (..., F, B, C, C).
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

    v_j real (..., F, B); R_j (..., B, C, C); inv_Cxx (..., F, B, C, C) -> (..., F, B, C, C).
    """
    return (R_j.unsqueeze(-4) @ inv_Cxx) * v_j[..., None, None]


def apply_filter(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Filter the mixture: W x per TF bin.

    x (..., F, B, C); W (..., F, B, C, C) -> (..., F, B, C).
    """
    return (W @ x.unsqueeze(-1)).squeeze(-1)


def _em_mono(
    p: torch.Tensor, x2: torch.Tensor, iterations: int, eps: float, keep_v: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One-channel EM on real powers (closed form of norbert's EM for C = 1), in place.

    Work layout (N, F, J, B): bins contiguous, so sums over sources and frames and every
    broadcast run along them. p: (N, F, J, B) powers |y|^2 of the current estimates, overwritten
    by the gain; x2: (N, F, B) |x|^2. Returns the real gain g (N, F, J, B) (the storage of p)
    with y = g x, the v (N, F, J, B) of the last iteration when ``keep_v`` (else None) and its
    R (N, J, B) (real: the 1x1 spatial covariances).
    """
    # norbert: inv(Cxx) = 1 / ((sum_j v_j R_j + sqrt(eps)) + eps)
    reg = math.sqrt(eps) + eps
    v, r = None, p.new_zeros(p.shape[0], *p.shape[2:])
    for it in range(iterations):
        s = p.sum(1)  # (N, J, B)
        r = s / (s + eps)
        if keep_v and it + 1 == iterations:
            v = p.clone()
        g = p.mul_(r.unsqueeze(1))  # v_j R_j
        g /= g.sum(2, keepdim=True) + reg
        if it + 1 < iterations:
            p = g.square_().mul_(x2.unsqueeze(2))
    return p, v, r


def _mono_powers(y: torch.Tensor) -> torch.Tensor:
    """|y|^2 in the work layout. complex (N, F, B, J) -> real (N, F, J, B)."""
    yr = torch.view_as_real(y.transpose(-1, -2))
    return yr[..., 0].square().addcmul_(yr[..., 1], yr[..., 1])


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


def _em_stereo(
    Y: torch.Tensor, X: torch.Tensor, iterations: int, eps: float, batch_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """norbert's EM for C = 2 as elementwise closed-form 2x2 algebra, updating ``Y`` in place.

    Work layout (N, F, C, J, B): bins contiguous, so every operation runs along them. The
    Hermitian covariances are kept as their real diagonal and one complex off-diagonal term.
    Y: complex (N, F, 2, J, B) estimates (overwritten); X: complex (N, F, 2, B) mixture.
    Returns v real (N, F, J, B) and R complex (N, B, 2, 2, J) of the last iteration.
    """
    N, F, _, J, B = Y.shape
    v = Y.real.new_zeros((N, F, J, B))
    R = Y.new_zeros((N, B, 2, 2, J))
    reg = math.sqrt(eps)
    for _ in range(iterations):
        Yr = torch.view_as_real(Y)
        (y0r, y0i), (y1r, y1i) = Yr[:, :, 0].unbind(-1), Yr[:, :, 1].unbind(-1)
        P0 = y0r.square().addcmul_(y0i, y0i)  # |y_0|^2: (N, F, J, B)
        P1 = y1r.square().addcmul_(y1i, y1i)
        v = (P0 + P1) / 2
        w = v.sum(1) + eps  # (N, J, B)
        R00, R11 = P0.sum(1) / w, P1.sum(1) / w
        del P0, P1
        R01r = (y0r * y1r).addcmul_(y0i, y1i).sum(1) / w  # y_0 conj(y_1)
        R01i = (y0i * y1r).addcmul_(y0r, y1i, value=-1).sum(1) / w
        Rs = torch.stack((R00, R11, R01r, R01i)).unsqueeze(2)  # (4, N, 1, J, B)
        r00, r11 = R00.to(Y.dtype).unsqueeze(1), R11.to(Y.dtype).unsqueeze(1)  # (N, 1, J, B)
        r01 = torch.complex(R01r, R01i).unsqueeze(1)
        r10 = r01.conj().resolve_conj()
        for t0 in range(0, F, batch_frames):
            sl = slice(t0, t0 + batch_frames)
            vb = v[:, sl]
            c00, c11, c01r, c01i = (vb * Rs).sum(3)  # Cxx terms: (N, f, B)
            c00, c11 = c00 + reg, c11 + reg
            inv_det = 1.0 / (c00 * c11 - (c01r.square() + c01i.square()))
            c01 = torch.complex(c01r, c01i)
            x0, x1 = X[:, sl, 0], X[:, sl, 1]
            z0 = ((c11 * x0 - c01 * x1) * inv_det).unsqueeze(2)  # inv(Cxx) x: (N, f, 1, B)
            z1 = ((c00 * x1 - c01.conj() * x0) * inv_det).unsqueeze(2)
            vc = vb.to(Y.dtype)
            # y_j = v_j R_j inv(Cxx) x
            torch.mul(torch.addcmul(r00 * z0, r01, z1), vc, out=Y[:, sl, 0])
            torch.mul(torch.addcmul(r11 * z1, r10, z0), vc, out=Y[:, sl, 1])
        R = torch.stack((r00, r01, r10, r11), -1)[:, 0].unflatten(-1, (2, 2))  # (N, J, B, 2, 2)
        R = R.permute(0, 2, 3, 4, 1)
    return v, R


def _to_work(gain: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """gain real (N, F, B, {1, C}, J) times src complex (N, F, B, C) -> complex (N, F, C, J, B)."""
    N, F, B, C = src.shape
    Y = torch.empty((N, F, C, gain.shape[-1], B), dtype=src.dtype, device=src.device)
    Yr = torch.view_as_real(Y)
    g = gain.permute(0, 1, 3, 4, 2)  # (N, F, {1, C}, J, B)
    s = torch.view_as_real(src).permute(0, 1, 3, 4, 2).unsqueeze(3)  # (N, F, C, 1, 2, B)
    torch.mul(g, s[..., 0, :], out=Yr[..., 0])
    torch.mul(g, s[..., 1, :], out=Yr[..., 1])
    return Y


def _from_work(Y: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """complex (N, F, C, J, B) [times real scale (N, 1, 1, 1)] -> complex (N, F, B, C, J)."""
    N, F, C, J, B = Y.shape
    y = torch.empty((N, F, B, C, J), dtype=Y.dtype, device=Y.device)
    Yp = Y.permute(0, 1, 4, 2, 3)
    if scale is None:
        return y.copy_(Yp)
    return torch.mul(Yp, scale.to(Y.dtype).unsqueeze(-1), out=y)


def _em_full(
    y: torch.Tensor, x: torch.Tensor, iterations: int, eps: float, batch_frames: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-covariance EM in norbert's layout: elementwise 2x2 for stereo, torch.linalg else.

    y: complex (N, F, B, C, J); x: complex (N, F, B, C) -> y, v (N, F, B, J), R (N, B, C, C, J).
    """
    if x.shape[-1] != 2:
        return _em_multi(y, x, iterations, eps, batch_frames)
    Y = torch.empty(y.shape[:2] + y.shape[3:] + y.shape[2:3], dtype=y.dtype, device=y.device)
    Y.copy_(y.permute(0, 1, 3, 4, 2))
    v, R = _em_stereo(Y, x.transpose(-1, -2), iterations, eps, batch_frames)
    return _from_work(Y), v.transpose(-1, -2), R


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
        x2 = _mono_powers(xf)[:, :, 0]
        g, vf, r = _em_mono(_mono_powers(yf[..., 0, :]), x2, iterations, eps, keep_v=True)
        yf = _times_mix(g.transpose(-1, -2).unsqueeze(-2), xf)
        vf = vf.transpose(-1, -2)
        Rf = r.transpose(-1, -2).to(x.dtype)[..., None, None, :]
    elif iterations > 0:
        yf, vf, Rf = _em_full(yf, xf, iterations, eps, batch_frames)
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
    lead, (F, B, C), J = x.shape[:-3], x.shape[-3:], v.shape[-1]
    xf = x.reshape(-1, F, B, C)
    vf = v.reshape(-1, F, B, v.shape[-2], J)
    N = xf.shape[0]

    if iterations == 0 or C > 1:
        # initial estimate y = gain * src: the soft mask times x, or |v| with the mixture phase
        if softmask:
            gain, src = _ratio_mask(vf, eps), xf
        else:  # angle 0 where x == 0, as numpy
            gain, src = vf, torch.polar(torch.ones_like(xf.real), torch.angle(xf))
        if iterations == 0:
            return _times_mix(gain, src).reshape(*lead, F, B, C, J)
        # norbert rescales for numerical stability: x / m with m = max(1, max|x| / 10)
        m = (xf.abs().amax(dim=(1, 2, 3), keepdim=True) / 10).clamp_(min=1.0)  # (N, 1, 1, 1)
        inv_m = (1.0 / m).to(x.dtype)  # complex: complex x real broadcasts are slow on CPU
        xs = xf * inv_m
        if C == 2:
            Y = _to_work(gain, src * inv_m)
            _em_stereo(Y, xs.transpose(-1, -2), iterations, eps, batch_frames)
            y = _from_work(Y, m)
        else:
            y, _, _ = _em_multi(_times_mix(gain, src * inv_m), xs, iterations, eps,
                                batch_frames)
            y = y * m.to(x.dtype).unsqueeze(-1)
    else:  # one channel with EM: work on real powers only, y = g x at the end
        x2 = _mono_powers(xf)[:, :, 0]  # (N, F, B)
        m2 = (x2.amax(dim=(1, 2), keepdim=True) / 100).clamp_(min=1.0)  # m^2
        x2 /= m2
        p = torch.empty((N, F, J, B), dtype=v.dtype, device=v.device)
        p.copy_(vf[..., 0, :].transpose(-1, -2))
        if softmask:  # p = (v / (eps + sum_j v))^2 |x / m|^2
            scale = x2.sqrt() / (p.sum(2) + eps)
        else:  # p = (v / m)^2
            scale = m2.rsqrt()
        p.mul_(scale.unsqueeze(2)).square_()
        g, _, _ = _em_mono(p, x2, iterations, eps)
        y = _times_mix(g.transpose(-1, -2).unsqueeze(-2), xf)
    return y.reshape(*lead, F, B, C, J)
