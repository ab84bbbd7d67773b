"""The one set of metrics: separation (SI-SDR, SD-SDR, PES, BSS-eval: v3 sources, v4 framewise)
and instrument detection (AP, F1, the threshold maximising macro-F1).

Conventions follow the paper's test protocol: per segment and per source, no mean removal.
``si_sdr``, ``sd_sdr``, ``pes`` and ``is_silent`` take numpy arrays or torch tensors (torch in,
torch out, same device, differentiable); numpy inputs are computed in float64.

BSS-eval gives the numbers of ``mir_eval.separation.bss_eval_sources`` (512-tap distortion
filters) and ``museval.metrics.bss_eval`` (v4) without their per-source recomputation. Per
segment: the auto/cross-correlations of all references and estimates at lags within the filter
length are computed at once (blockwise FFTs summed in the frequency domain); the block-Toeplitz
Gram matrix of the delayed references is solved once for all estimates with a multichannel
Levinson recursion (O(L^2 n^3)), the single-reference systems with the same recursion; every
energy of the decomposition (s_target, e_interf, e_artif, ...) is then a quadratic form in the
filter coefficients, evaluated from the correlations without building any signal."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.fft
import scipy.linalg
import torch
from scipy.optimize import linear_sum_assignment

from .instruments import CODES

Array = np.ndarray | torch.Tensor
BSSVersion = Literal["v3", "v4"]
Aggregation = Literal["median", "mean"]

_FFT_SIZE = 8192  # block FFT length for the correlations
_BLOCKS_PER_CHUNK = 16  # blocks transformed at once (bounds memory on long signals)
_MAX_BRUTE_FORCE_SOURCES = 8  # above this, permutations are found with the Hungarian algorithm


# --------------------------------------------------------------------------- scale-invariant


def _pair(estimate: Array, reference: Array) -> tuple[Array, Array]:
    """Both as torch (if either is) on the same device/dtype, else both as float64 numpy."""
    if isinstance(estimate, torch.Tensor) or isinstance(reference, torch.Tensor):
        like = estimate if isinstance(estimate, torch.Tensor) else reference
        estimate = torch.as_tensor(estimate, device=like.device, dtype=like.dtype)
        reference = torch.as_tensor(reference, device=like.device, dtype=like.dtype)
        return estimate, reference
    return np.asarray(estimate, dtype=np.float64), np.asarray(reference, dtype=np.float64)


def _log10(x: Array) -> Array:
    return torch.log10(x) if isinstance(x, torch.Tensor) else np.log10(x)


def _projection(estimate: Array, reference: Array, eps: float) -> Array:
    """alpha * s with alpha = <s_hat, s> / (||s||^2 + eps). (..., samples)."""
    alpha = (estimate * reference).sum(-1) / ((reference * reference).sum(-1) + eps)
    return alpha[..., None] * reference


def si_sdr(estimate: Array, reference: Array, eps: float = 1e-8) -> Array:
    """Scale-invariant SDR in dB. (..., samples) -> (...).

    10 log10(||alpha s||^2 / (||alpha s - s_hat||^2 + eps) + eps).
    """
    estimate, reference = _pair(estimate, reference)
    target = _projection(estimate, reference, eps)
    num = (target * target).sum(-1)
    den = ((target - estimate) ** 2).sum(-1)
    return 10 * _log10(num / (den + eps) + eps)


def sd_sdr(estimate: Array, reference: Array, eps: float = 1e-8) -> Array:
    """Scale-dependent SDR in dB. (..., samples) -> (...).

    10 log10(||alpha s||^2 / (||s - s_hat||^2 + eps) + eps).
    """
    estimate, reference = _pair(estimate, reference)
    target = _projection(estimate, reference, eps)
    num = (target * target).sum(-1)
    den = ((reference - estimate) ** 2).sum(-1)
    return 10 * _log10(num / (den + eps) + eps)


def pes(estimate: Array, eps: float = 1e-9) -> Array:
    """Predicted energy at silence in dB, 10 log10(sum s_hat^2 + eps). (..., samples) -> (...).

    Meant for sources whose target is silent; the floor is 10 log10(eps) (-90 dB by default).
    """
    if not isinstance(estimate, torch.Tensor):
        estimate = np.asarray(estimate, dtype=np.float64)
    return 10 * _log10((estimate * estimate).sum(-1) + eps)


def is_silent(x: Array, threshold: float = 1e-5) -> Array:
    """True where sum |x| <= threshold. (..., samples) -> bool (...)."""
    if isinstance(x, torch.Tensor):
        return x.abs().sum(-1) <= threshold
    return np.abs(np.asarray(x, dtype=np.float64)).sum(-1) <= threshold


# --------------------------------------------------------------------------------- BSS-eval


@dataclass(frozen=True, eq=False)
class BSSResult:
    """BSS-eval scores in dB, indexed by reference source (and frame, when framewise).

    ``perm[..., j]`` is the estimate matched to reference ``j`` (identity unless permutations
    were searched; -1 where a segment was skipped). ``isr`` is only set by the v4 (images)
    criteria. NaN marks segments/windows where a reference or an estimate is silent.
    """

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    perm: np.ndarray
    isr: np.ndarray | None = None


def _to_numpy(x: Array) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _check_pair(references: Array, estimates: Array) -> tuple[np.ndarray, np.ndarray]:
    references, estimates = _to_numpy(references), _to_numpy(estimates)
    if references.ndim == 1:
        references, estimates = references[None], estimates[None]
    if references.shape != estimates.shape:
        raise ValueError(
            f"references {references.shape} and estimates {estimates.shape} must have the same "
            "shape (..., sources, samples)"
        )
    if references.shape[-1] == 0:
        raise ValueError("references and estimates are empty: need at least one sample")
    return references, estimates


@dataclass(frozen=True)
class _Stats:
    """Second-order statistics of one or more segments (leading dims ``...``).

    corr: (..., n, n, 2L-1) with corr[..., i, j, k + L - 1] = sum_t s_i(t + k) s_j(t);
    cross: (..., n, m, L) with cross[..., i, e, a] = <s_i delayed by a, s_hat_e>;
    energy: (..., m) estimate energies.
    """

    corr: np.ndarray
    cross: np.ndarray
    energy: np.ndarray


def _correlations(references: np.ndarray, others: np.ndarray, flen: int) -> np.ndarray:
    """Cross-correlations for lags -(flen-1)..(flen-1). (n, T), (k, T) -> (n, k, 2*flen - 1).

    out[i, j, lag + flen - 1] = sum_t references[i, t + lag] * others[j, t]. The signals are cut
    in blocks; each block of ``others`` is correlated with the matching block of ``references``
    extended by flen - 1 samples on both sides (exact for these lags), and the products are
    summed over blocks in the frequency domain, so only one short inverse FFT per pair is needed.
    """
    n, n_samples = references.shape
    k = others.shape[0]
    block = min(n_samples, max(flen, _FFT_SIZE - 2 * (flen - 1)))
    nfft = scipy.fft.next_fast_len(block + 2 * (flen - 1), real=True)
    nblocks = -(-n_samples // block)
    extended = np.zeros((n, nblocks * block + 2 * (flen - 1)))
    extended[:, flen - 1 : flen - 1 + n_samples] = references
    extended = np.lib.stride_tricks.sliding_window_view(
        extended, block + 2 * (flen - 1), axis=-1
    )[:, ::block]
    plain = np.zeros((k, nblocks * block))
    plain[:, :n_samples] = others
    plain = plain.reshape(k, nblocks, block)
    acc = np.zeros((nfft // 2 + 1, n, k), dtype=complex)
    for start in range(0, nblocks, _BLOCKS_PER_CHUNK):
        chunk = slice(start, start + _BLOCKS_PER_CHUNK)
        spec_x = scipy.fft.rfft(extended[:, chunk], n=nfft, axis=-1, workers=-1)
        spec_y = scipy.fft.rfft(plain[:, chunk], n=nfft, axis=-1, workers=-1)
        acc += np.matmul(spec_x.conj().transpose(2, 0, 1), spec_y.transpose(2, 1, 0))
    # acc = sum_b conj(X_i) Y_j; the correlation wanted is the inverse FFT of its conjugate
    return scipy.fft.irfft(acc.conj().transpose(1, 2, 0), n=nfft, axis=-1)[..., : 2 * flen - 1]


def _segment_stats(references: np.ndarray, estimates: np.ndarray, flen: int) -> _Stats:
    """Statistics of one segment: references (n, T), estimates (m, T)."""
    n = references.shape[0]
    corr = _correlations(references, np.concatenate([references, estimates]), flen)
    # <s_i delayed by a, s_hat_e> = sum_t s_i(t - a) s_hat_e(t): lag -a
    cross = corr[:, n:, flen - 1 :: -1][..., :flen]
    return _Stats(corr[:, :n], np.ascontiguousarray(cross),
                  np.einsum("et,et->e", estimates, estimates))


def _stack(stats: list[_Stats]) -> _Stats:
    return _Stats(*(np.stack([getattr(s, f) for s in stats]) for f in ("corr", "cross", "energy")))


def _dense_gram(corr: np.ndarray) -> np.ndarray:
    """Gram matrix of the delayed references, ordered (delay, source). (n, n, 2L-1) -> (nL, nL).

    G[(a, i), (b, j)] = <s_i delayed by a, s_j delayed by b> = R_ij(b - a).
    """
    n, flen = corr.shape[0], (corr.shape[-1] + 1) // 2
    lags = np.arange(flen)
    index = (flen - 1) + lags[None, :] - lags[:, None]
    return corr[:, :, index].transpose(2, 0, 3, 1).reshape(flen * n, flen * n)


def _block_levinson(corr: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve G x = rhs for the block-Toeplitz Gram matrix of delayed references (Whittle's
    multichannel Levinson recursion, O(L^2 n^3) instead of O(L^3 n^3)).

    corr (..., n, n, 2L-1) as in ``_Stats``; rhs (..., L*n, r) ordered (delay, source);
    returns x (..., L*n, r). Raises LinAlgError on a singular leading block.
    """
    *lead, n, _, width = corr.shape
    flen = (width + 1) // 2
    # row[..., i, k, j] = R_ij(k - L + 1): one block row of G is a contiguous slice
    row = np.ascontiguousarray(np.swapaxes(corr, -1, -2))
    eye = np.eye(n)
    inv0 = np.linalg.inv(corr[..., flen - 1])
    # fb = [F | B]: first / last block columns of the inverse of the leading sub-matrix
    fb = np.zeros((*lead, flen * n, 2 * n))
    fb[..., :n, :n] = inv0
    fb[..., :n, n:] = inv0
    x = np.zeros((*lead, flen * n, rhs.shape[-1]))
    x[..., :n, :] = inv0 @ rhs[..., :n, :]
    m1 = np.empty((*lead, n, 2 * n))
    m2 = np.empty_like(m1)
    for m in range(flen - 1):
        size = (m + 1) * n
        last = row[..., flen - 2 - m : flen - 1, :].reshape(*lead, n, size)  # block row m+1
        first = row[..., flen : flen + m + 1, :].reshape(*lead, n, size)  # block row 0, shifted
        e_f = last @ fb[..., :size, :n]
        e_x = last @ x[..., :size, :]
        e_b = first @ fb[..., :size, n:]
        alpha = np.linalg.inv(eye - e_b @ e_f)
        delta = np.linalg.inv(eye - e_f @ e_b)
        m1[..., :n], m1[..., n:] = alpha, -e_b @ delta
        m2[..., :n], m2[..., n:] = -e_f @ alpha, delta
        top = fb[..., :size, :n] @ m1
        bottom = fb[..., :size, n:] @ m2
        fb[..., :size, :] = top
        fb[..., size : size + n, :] = 0.0
        fb[..., n : size + n, :] += bottom
        x[..., : size + n, :] += fb[..., : size + n, n:] @ (rhs[..., size : size + n, :] - e_x)
    return x


def _solve_gram(corr: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``_block_levinson`` over a stack of segments; a segment whose recursion breaks down
    (singular Gram matrix) is solved by dense least squares instead."""
    try:
        with np.errstate(all="ignore"):
            x = _block_levinson(corr, rhs)
    except np.linalg.LinAlgError:
        if corr.ndim > 3:
            return np.stack([_solve_gram(c, r) for c, r in zip(corr, rhs, strict=True)])
        x = np.full(rhs.shape, np.nan)
    for k in map(tuple, np.argwhere(~np.isfinite(x).all(axis=(-2, -1)))):
        x[k] = scipy.linalg.lstsq(_dense_gram(corr[k]), rhs[k], check_finite=False)[0]
    return x


@dataclass(frozen=True)
class _Filters:
    """Least-squares distortion filters (leading dims ``...``).

    full[..., e, i, :]: filter of reference i in the projection of estimate e on all references;
    own[..., j, e, :]: filter in the projection of estimate e on reference j alone.
    """

    full: np.ndarray
    own: np.ndarray


def _filters(stats: _Stats) -> _Filters:
    """Distortion filters of every estimate, for a stack of segments."""
    *lead, n, m, flen = stats.cross.shape
    rhs = np.moveaxis(stats.cross, -1, -3).reshape(*lead, flen * n, m)
    full = _solve_gram(stats.corr, rhs).reshape(*lead, flen, n, m)
    full = np.moveaxis(full, -3, -1).swapaxes(-3, -2)  # (..., m, n, L)
    # each reference alone: the same recursion with 1 x 1 blocks, batched over references
    diag = np.diagonal(stats.corr, axis1=-3, axis2=-2)  # (..., 2L-1, n)
    own = _solve_gram(np.moveaxis(diag, -1, -2)[..., None, None, :],
                      np.swapaxes(stats.cross, -1, -2))  # (..., n, L, m)
    return _Filters(np.ascontiguousarray(full), np.ascontiguousarray(np.swapaxes(own, -1, -2)))


def _quad(corr: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """||sum_i coef_i * s_i||^2 for filters coef (..., K, n, L) -> (..., K), from correlations.

    = sum_ij sum_k R_ij(k) sum_a coef_i(a) coef_j(a + k), the lag sums done by FFT.
    """
    flen = coef.shape[-1]
    nfft = scipy.fft.next_fast_len(2 * flen - 1, real=True)
    spec = scipy.fft.rfft(coef, n=nfft, axis=-1)
    # circular embedding of R_ij (lag k at index k mod nfft), then its spectrum
    embedded = np.zeros((*corr.shape[:-1], nfft))
    embedded[..., :flen] = corr[..., flen - 1 :]
    embedded[..., nfft - flen + 1 :] = corr[..., : flen - 1]
    r_spec = scipy.fft.rfft(embedded, axis=-1)
    weight = np.full(spec.shape[-1], 2.0)
    weight[0] = 1.0
    if nfft % 2 == 0:
        weight[-1] = 1.0
    # sum_k R(k) rho(k) = (1/N) sum_f conj(R^(f)) rho^(f), rho^_ij = conj(V_i) V_j
    prod = np.einsum("...ijf,...kif,...kjf->...k", r_spec.conj() * weight, spec.conj(), spec)
    return prod.real / nfft


def _dot(coef: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """<sum_i coef_i * s_i, s_hat> for coef (..., K, n, L), cross (..., K, n, L) -> (..., K)."""
    return np.einsum("...kil,...kil->...k", coef, cross)


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """10 log10(num / den), +inf where den <= 0 (an exact decomposition)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 10 * np.log10(num / np.where(den > 0, den, 1.0)), np.inf)


def _embed(own: np.ndarray, refs: np.ndarray, n: int) -> np.ndarray:
    """Filters on one reference each (..., K, L) -> filters on all references (..., K, n, L)."""
    out = np.zeros((*own.shape[:-1], n, own.shape[-1]))
    out[..., np.arange(refs.size), refs, :] = own
    return out


def _sources_criteria(stats: _Stats, filt: _Filters, refs: np.ndarray, ests: np.ndarray):
    """BSS-eval v3 ``bss_eval_sources`` of pairs (reference refs[p], estimate ests[p]).

    s_filt = P_j s_hat, e_interf = P s_hat - P_j s_hat, e_artif = s_hat - P s_hat, where P and
    P_j project on the delayed versions of all references and of reference j. -> 3 x (..., P).
    """
    n = stats.corr.shape[-3]
    own = _embed(filt.own[..., refs, ests, :], refs, n)
    full = filt.full[..., ests, :, :]
    quad = _quad(stats.corr, np.concatenate([own, full, full - own], axis=-3))
    p_own, p_all, e_interf = np.split(quad, 3, axis=-1)
    cross = np.swapaxes(stats.cross, -3, -2)[..., ests, :, :]  # (..., P, n, L)
    energy = stats.energy[..., ests]
    res_own = energy - 2 * _dot(own, cross) + p_own
    res_all = energy - 2 * _dot(full, cross) + p_all
    return _db(p_own, res_own), _db(p_own, e_interf), _db(p_all, res_all)


def _images_criteria(
    stats: _Stats, filt: _Filters, references: np.ndarray, estimates: np.ndarray
) -> tuple[np.ndarray, ...]:
    """BSS-eval v4 images criteria of one window with given filters, source j vs estimate j:
    sdr, isr, sir, sar (n,).

    s_true = s_j, s_true + e_spat = c_j * s_j, s_true + e_spat + e_interf = sum_i c_i * s_i.
    """
    n = references.shape[0]
    idx = np.arange(n)
    own = filt.own[idx, idx]
    spat = own.copy()
    spat[:, 0] -= 1.0  # c_j - delta
    own, spat = _embed(own, idx, n), _embed(spat, idx, n)
    quad = _quad(stats.corr, np.concatenate([own, spat, filt.full, filt.full - own]))
    p_own, e_spat, p_all, e_interf = np.split(quad, 4)
    e_true = np.einsum("jt,jt->j", references, references)
    res_true = np.einsum("jt,jt->j", estimates - references, estimates - references)
    res_all = stats.energy - 2 * _dot(filt.full, np.swapaxes(stats.cross, 0, 1)) + p_all
    return (_db(e_true, res_true), _db(e_true, e_spat), _db(p_own, e_interf),
            _db(p_all, res_all))


def _best_permutation(sir: np.ndarray) -> np.ndarray:
    """perm[j] = estimate for reference j maximising the mean SIR; sir is (reference, estimate).

    Brute force in mir_eval's order (first maximum wins) for up to 8 sources, else Hungarian.
    """
    n = sir.shape[0]
    if n > _MAX_BRUTE_FORCE_SOURCES:
        cost = -np.nan_to_num(sir, posinf=1e6, neginf=-1e6)
        rows, cols = linear_sum_assignment(cost)
        return cols[np.argsort(rows)]
    perms = np.array(list(itertools.permutations(range(n))))
    mean_sir = sir[np.arange(n)[None, :], perms].mean(axis=1)
    return perms[np.argmax(mean_sir)]


def _any_silent(x: np.ndarray, threshold: float) -> bool:
    return bool(np.any(np.abs(x).sum(-1) <= threshold))


def _v3_scores(
    segments: list[tuple[np.ndarray, np.ndarray]], flen: int, compute_permutation: bool
) -> tuple[np.ndarray, ...]:
    """bss_eval_sources of non-silent segments [(references, estimates) (n, T)], solved as one
    batch. -> sdr, sir, sar, perm, each (segments, n)."""
    n = segments[0][0].shape[0]
    stats = _stack([_segment_stats(refs, ests, flen) for refs, ests in segments])
    filt = _filters(stats)
    if compute_permutation:
        refs, ests = (i.ravel() for i in np.indices((n, n)))
    else:
        refs = ests = np.arange(n)
    crit = np.stack(_sources_criteria(stats, filt, refs, ests))  # (3, segments, pairs)
    if not compute_permutation:
        return (*crit, np.tile(np.arange(n), (len(segments), 1)))
    crit = crit.reshape(3, len(segments), n, n)  # (metric, segment, reference, estimate)
    perm = np.stack([_best_permutation(sir) for sir in crit[1]])
    picked = np.take_along_axis(crit, perm[None, :, :, None], axis=-1)[..., 0]
    return (*picked, perm)


def bss_eval_sources(
    references: Array,
    estimates: Array,
    filter_length: int = 512,
    compute_permutation: bool = False,
    silence_threshold: float = 1e-5,
) -> BSSResult:
    """BSS-eval v3 ``bss_eval_sources`` (as mir_eval) on whole segments.

    references, estimates: (..., sources, samples) -> BSSResult with arrays (..., sources).
    Without ``compute_permutation`` estimate j is scored against reference j; with it, the
    permutation of estimates maximising the mean SIR is chosen (as mir_eval). A segment in which
    any reference or estimate is silent (sum |x| <= silence_threshold) gets NaN (and perm -1).
    """
    references, estimates = _check_pair(references, estimates)
    lead, (n, n_samples) = references.shape[:-2], references.shape[-2:]
    refs = references.reshape(-1, n, n_samples)
    ests = estimates.reshape(-1, n, n_samples)
    scores = np.full((3, refs.shape[0], n), np.nan)
    perm = np.tile(np.arange(n), (refs.shape[0], 1))
    valid = [k for k in range(refs.shape[0])
             if not (_any_silent(refs[k], silence_threshold)
                     or _any_silent(ests[k], silence_threshold))]
    if compute_permutation:
        perm[:] = -1
    if valid:
        *crit, best = _v3_scores([(refs[k], ests[k]) for k in valid], filter_length,
                                 compute_permutation)
        scores[:, valid] = crit
        perm[valid] = best
    sdr, sir, sar = (s.reshape(*lead, n) for s in scores)
    return BSSResult(sdr, sir, sar, perm.reshape(*lead, n))


def frame_slices(n_samples: int, window: int, hop: int) -> list[slice]:
    """Analysis windows as museval: floor((n - window + hop) / hop) full windows, or one window
    over the whole signal when it is not longer than ``window``."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window ({window}) and hop ({hop}) must be positive sample counts")
    if window >= n_samples:
        return [slice(0, n_samples)]
    count = (n_samples - window + hop) // hop
    return [slice(k * hop, k * hop + window) for k in range(count)]


def bss_eval_framewise(
    references: Array,
    estimates: Array,
    window: int,
    hop: int,
    filter_length: int = 512,
    version: BSSVersion = "v3",
    silence_threshold: float = 1e-5,
) -> BSSResult:
    """Framewise BSS-eval, no permutation. (sources, samples) -> arrays (sources, frames).

    ``version="v3"``: filters re-estimated in every window, ``bss_eval_sources`` criteria (as
    mir_eval's ``bss_eval_sources_framewise``). ``version="v4"``: filters estimated once on the
    whole signal and applied in every window, images criteria with ISR (as museval's
    ``bss_eval`` default, SiSEC 2018). Windows where any reference or estimate is silent
    (sum |x| <= silence_threshold) are NaN. ``window`` and ``hop`` are in samples; windows are
    ``frame_slices(samples, window, hop)``.
    """
    if version not in ("v3", "v4"):
        raise ValueError(f"unknown BSS-eval version {version!r}: use 'v3' or 'v4'")
    references, estimates = _check_pair(references, estimates)
    if references.ndim != 2:
        raise ValueError(f"framewise BSS-eval takes (sources, samples), got {references.shape}")
    n, n_samples = references.shape
    slices = frame_slices(n_samples, window, hop)
    scores = np.full((4, n, len(slices)), np.nan)  # sdr, isr, sir, sar
    valid = [t for t, win in enumerate(slices)
             if not (_any_silent(references[:, win], silence_threshold)
                     or _any_silent(estimates[:, win], silence_threshold))]
    if valid and version == "v3":
        segments = [(references[:, slices[t]], estimates[:, slices[t]]) for t in valid]
        sdr, sir, sar, _ = _v3_scores(segments, filter_length, compute_permutation=False)
        for row, values in zip((0, 2, 3), (sdr, sir, sar), strict=True):
            scores[row][:, valid] = values.T
    elif valid:  # v4: one set of filters for the whole signal
        stats = _segment_stats(references, estimates, filter_length)
        filt = _filters(_stack([stats]))
        filt = _Filters(filt.full[0], filt.own[0])
        for t in valid:
            refs, ests = references[:, slices[t]], estimates[:, slices[t]]
            crit = _images_criteria(_segment_stats(refs, ests, filter_length), filt, refs, ests)
            scores[:, :, t] = crit
    return BSSResult(scores[0], scores[2], scores[3], np.arange(n),
                     scores[1] if version == "v4" else None)


def nan_aggregate(values: np.ndarray, method: Aggregation = "median", axis: int = -1) -> np.ndarray:
    """Median or mean along ``axis`` ignoring NaN; NaN where every value is NaN."""
    if method not in ("median", "mean"):
        raise ValueError(f"unknown aggregation {method!r}: use 'median' or 'mean'")
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return (np.nanmedian if method == "median" else np.nanmean)(values, axis=axis)


def aggregate_frames(result: BSSResult, method: Aggregation = "median") -> BSSResult:
    """Framewise result (sources, frames) -> one value per source, ignoring NaN frames."""
    isr = None if result.isr is None else nan_aggregate(result.isr, method)
    return BSSResult(nan_aggregate(result.sdr, method), nan_aggregate(result.sir, method),
                     nan_aggregate(result.sar, method), result.perm, isr)


# ---------------------------------------------------------------------------- detection


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of each positive. NaN without positives."""
    targets = np.asarray(targets, bool)
    if not targets.any():
        return math.nan
    hits = targets[np.argsort(-np.asarray(scores), kind="stable")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def f1_scores(probs: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray
              ) -> np.ndarray:
    """Per-class F1 (K,) of ``probs > threshold`` (one for all classes or one each, (K,))
    against ``targets``, both (N, K); a class with no positive and no detection gets NaN."""
    pred, true = np.asarray(probs) > np.asarray(threshold), np.asarray(targets, bool)
    tp = (pred & true).sum(0)
    denominator = pred.sum(0) + true.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def best_threshold(probs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """The threshold in 0.05..0.95 (step 0.01) maximising macro-F1 -> (threshold, macro-F1)."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    scores = [float(np.nanmean(f1_scores(probs, targets, t))) for t in grid]
    i = int(np.argmax(scores))
    return float(grid[i]), scores[i]


def best_class_thresholds(probs: np.ndarray, targets: np.ndarray, fallback: float
                          ) -> np.ndarray:
    """Per class, the threshold in 0.05..0.95 (step 0.01) maximising that class's F1 (the
    middle of the best run of thresholds: ties are common on small sets) -> (K,); a class
    without positives keeps ``fallback``."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    scores = np.stack([f1_scores(probs, targets, t) for t in grid])  # (thresholds, K)
    out = np.full(scores.shape[1], float(fallback))
    for k in range(scores.shape[1]):
        if np.asarray(targets)[:, k].any():
            best = np.flatnonzero(scores[:, k] >= np.nanmax(scores[:, k]) - 1e-12)
            out[k] = grid[best[len(best) // 2]]
    return out


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Calibration of probabilities against 0/1 targets (any shape, pooled over every class):
    ``bins`` equal-width probability bins -> ``edges`` (bins + 1,), per bin ``confidence``
    (mean probability), ``observed`` (share of positives) and ``count`` (NaN where empty), and
    ``ece``, the expected calibration error (count-weighted mean |observed - confidence|)."""
    p = np.asarray(probs, np.float64).ravel()
    t = np.asarray(targets, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, p, bins) / count
        observed = np.bincount(which, t, bins) / count
    used = count > 0
    ece = float(np.sum(count[used] * np.abs(observed[used] - confidence[used])) / max(len(p), 1))
    return {"edges": edges, "confidence": confidence, "observed": observed, "count": count,
            "ece": ece}


def detection_metrics(probs: np.ndarray, targets: np.ndarray,
                      threshold: float | np.ndarray | None = None,
                      classes: Sequence[str] = CODES) -> dict[str, Any]:
    """mAP, macro-F1 and per-class AP / F1 of probabilities (N, K) against 0/1 targets (N, K).

    ``threshold``: one for every class, one per class (K,), or None: the one maximising
    macro-F1 (also returned).
    """
    if threshold is None:
        threshold, _ = best_threshold(probs, targets)
    ap = np.array([average_precision(probs[:, k], targets[:, k]) for k in range(probs.shape[1])])
    f1 = f1_scores(probs, targets, threshold)
    return {
        "map": float(np.nanmean(ap)),
        "f1": float(np.nanmean(f1)),
        "threshold": threshold if np.ndim(threshold) == 0 else
        {c: float(t) for c, t in zip(classes, threshold, strict=True)},
        "ap": {c: _finite(a) for c, a in zip(classes, ap, strict=True)},
        "per_class_f1": {c: _finite(x) for c, x in zip(classes, f1, strict=True)},
    }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
