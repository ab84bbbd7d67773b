"""The one set of separation metrics: SI-SDR, SD-SDR, PES and BSS-eval (v3 sources, v4 framewise).

Conventions follow the paper's test protocol: per segment and per source, no mean removal.
``si_sdr``, ``sd_sdr``, ``pes`` and ``is_silent`` take numpy arrays or torch tensors (torch in,
torch out, same device, differentiable); numpy inputs are computed in float64.

BSS-eval reproduces ``mir_eval.separation.bss_eval_sources`` (512-tap distortion filters) and
``museval.metrics.bss_eval`` (v4) without their per-source recomputation: per segment, the
auto/cross-correlations of all references and estimates are computed at once with blockwise
FFTs, the Gram matrix of delayed references is assembled from Toeplitz blocks and factorised
once, and every energy of the decomposition is a quadratic form in the filter coefficients.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.fft
import scipy.linalg
import torch
from scipy.optimize import linear_sum_assignment

Array = np.ndarray | torch.Tensor
BSSVersion = Literal["v3", "v4"]
Aggregation = Literal["median", "mean"]

_FFT_SIZE = 8192  # block FFT length for the correlations
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
        x = x.detach().cpu().numpy()
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
    """Second-order statistics of one segment.

    gram: (n*L, n*L) inner products of delayed references; cross: (n*L, m) inner products of
    delayed references with the estimates; energy: (m,) estimate energies.
    """

    gram: np.ndarray
    cross: np.ndarray
    energy: np.ndarray


def _block_spectra(x: np.ndarray, flen: int, block: int, nfft: int, extended: bool) -> np.ndarray:
    """Spectra of consecutive blocks. (k, samples) -> (k, blocks, nfft // 2 + 1).

    Plain blocks hold samples [b*block, (b+1)*block); extended blocks also hold flen - 1 samples
    on each side (zeros outside the signal), so that their circular cross-correlation with a
    plain block is exact for lags within +-(flen - 1).
    """
    k, n = x.shape
    nblocks = -(-n // block)
    if extended:
        padded = np.zeros((k, nblocks * block + 2 * (flen - 1)))
        padded[:, flen - 1 : flen - 1 + n] = x
        frames = np.lib.stride_tricks.sliding_window_view(
            padded, block + 2 * (flen - 1), axis=-1
        )[:, ::block]
    else:
        padded = np.zeros((k, nblocks * block))
        padded[:, :n] = x
        frames = padded.reshape(k, nblocks, block)
    return scipy.fft.rfft(frames, n=nfft, axis=-1)


def _correlations(references: np.ndarray, others: np.ndarray, flen: int) -> np.ndarray:
    """Cross-correlations for lags -(flen-1)..(flen-1).

    references (n, samples), others (k, samples) -> (n, k, 2*flen - 1) with
    out[i, j, lag + flen - 1] = sum_t references[i, t + lag] * others[j, t].
    """
    n_samples = references.shape[-1]
    block = min(n_samples, max(flen, _FFT_SIZE - 2 * (flen - 1)))
    nfft = scipy.fft.next_fast_len(block + 2 * (flen - 1), real=True)
    spec_x = _block_spectra(references, flen, block, nfft, extended=True)
    spec_y = _block_spectra(others, flen, block, nfft, extended=False)
    # sum over blocks of X_i conj(Y_j), as one batched matmul per frequency
    cross = np.matmul(spec_x.transpose(2, 0, 1), spec_y.conj().transpose(2, 1, 0))
    return scipy.fft.irfft(cross.transpose(1, 2, 0), n=nfft, axis=-1)[..., : 2 * flen - 1]


def _segment_stats(references: np.ndarray, estimates: np.ndarray, flen: int) -> _Stats:
    """Gram matrix, cross products and energies of one segment ((n, T), (m, T))."""
    n = references.shape[0]
    corr = _correlations(references, np.concatenate([references, estimates]), flen)
    lags = np.arange(flen)
    # G[(i, a), (j, b)] = <s_i delayed a, s_j delayed b> = R_ij(b - a)
    toeplitz_index = (flen - 1) + lags[None, :] - lags[:, None]
    gram = corr[:, :n][:, :, toeplitz_index].transpose(0, 2, 1, 3).reshape(n * flen, n * flen)
    gram = 0.5 * (gram + gram.T)
    # D[(i, a), e] = <s_i delayed a, s_hat_e> = R_ie(-a)
    cross = corr[:, n:][:, :, flen - 1 - lags].transpose(0, 2, 1).reshape(n * flen, -1)
    return _Stats(gram, cross, np.einsum("et,et->e", estimates, estimates))


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Least-squares filters: Cholesky, else LU, else lstsq (singular Gram matrix)."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram, check_finite=False), rhs)
    except np.linalg.LinAlgError:
        pass
    try:
        return scipy.linalg.solve(gram, rhs, check_finite=False)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgWarning):
        return scipy.linalg.lstsq(gram, rhs, check_finite=False)[0]


def _quad(gram: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """coef_e^T gram coef_e for every column e. (K, K), (K, m) -> (m,)."""
    return np.einsum("ke,ke->e", coef, gram @ coef)


def _db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """10 log10(num / den), +inf where den <= 0 (an exact decomposition)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 10 * np.log10(num / np.where(den > 0, den, 1.0)), np.inf)


@dataclass(frozen=True)
class _Filters:
    """Distortion filters of every estimate: on all references (n*L, m), and on reference j
    alone (n, L, m)."""

    full: np.ndarray
    own: np.ndarray


def _filters(stats: _Stats, n: int, flen: int) -> _Filters:
    full = _solve(stats.gram, stats.cross)
    own = np.stack([
        _solve(stats.gram[j * flen : (j + 1) * flen, j * flen : (j + 1) * flen],
               stats.cross[j * flen : (j + 1) * flen])
        for j in range(n)
    ])
    return _Filters(full, own)


def _interference_energy(gram: np.ndarray, filt: _Filters, n: int, flen: int) -> np.ndarray:
    """||sum_i c_i * s_i - c_j * s_j||^2 for every (reference j, estimate e). -> (n, m)."""
    out = np.empty((n, filt.full.shape[1]))
    for j in range(n):
        diff = filt.full.copy()
        diff[j * flen : (j + 1) * flen] -= filt.own[j]
        out[j] = _quad(gram, diff)
    return out


def _sources_criteria(stats: _Stats, n: int, flen: int) -> tuple[np.ndarray, ...]:
    """BSS-eval v3 ``bss_eval_sources`` for every (reference j, estimate e): sdr, sir, sar (n, m).

    s_filt = P_j s_hat, e_interf = P s_hat - P_j s_hat, e_artif = s_hat - P s_hat, where P and
    P_j project on the delayed versions of all references and of reference j.
    """
    filt = _filters(stats, n, flen)
    p_all = _quad(stats.gram, filt.full)
    res_all = stats.energy - 2 * np.einsum("ke,ke->e", filt.full, stats.cross) + p_all
    p_own = np.empty((n, stats.energy.size))
    res_own = np.empty_like(p_own)
    for j in range(n):
        blk = slice(j * flen, (j + 1) * flen)
        p_own[j] = _quad(stats.gram[blk, blk], filt.own[j])
        res_own[j] = stats.energy - 2 * np.einsum("ke,ke->e", filt.own[j], stats.cross[blk])
        res_own[j] += p_own[j]
    e_interf = _interference_energy(stats.gram, filt, n, flen)
    return (_db(p_own, res_own), _db(p_own, e_interf), _db(p_all[None], res_all[None]))


def _images_criteria(
    stats: _Stats, filt: _Filters, references: np.ndarray, estimates: np.ndarray, flen: int
) -> tuple[np.ndarray, ...]:
    """BSS-eval v4 images criteria of a window with given filters: sdr, isr, sir, sar (n, n).

    With s_true = s_j, s_true + e_spat = c_j * s_j, s_true + e_spat + e_interf = sum_i c_i * s_i.
    """
    n = references.shape[0]
    gram = stats.gram
    e_true = np.einsum("jt,jt->j", references, references)[:, None]
    res_true = ((estimates[None, :] - references[:, None]) ** 2).sum(-1)
    p_all = _quad(gram, filt.full)
    res_all = stats.energy - 2 * np.einsum("ke,ke->e", filt.full, stats.cross) + p_all
    p_own = np.empty((n, estimates.shape[0]))
    e_spat = np.empty_like(p_own)
    for j in range(n):
        blk = slice(j * flen, (j + 1) * flen)
        p_own[j] = _quad(gram[blk, blk], filt.own[j])
        spat = filt.own[j].copy()
        spat[0] -= 1.0  # c_j - delta: the filtered reference minus the reference
        e_spat[j] = _quad(gram[blk, blk], spat)
    e_interf = _interference_energy(gram, filt, n, flen)
    return (_db(e_true, res_true), _db(e_true, e_spat), _db(p_own, e_interf),
            _db(p_all[None], res_all[None]))


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
    any reference or estimate is silent (sum |x| <= silence_threshold) gets NaN.
    """
    references, estimates = _check_pair(references, estimates)
    lead, (n, n_samples) = references.shape[:-2], references.shape[-2:]
    refs = references.reshape(-1, n, n_samples)
    ests = estimates.reshape(-1, n, n_samples)
    sdr, sir, sar = (np.full((refs.shape[0], n), np.nan) for _ in range(3))
    perm = np.tile(np.arange(n), (refs.shape[0], 1))
    for k in range(refs.shape[0]):
        if _any_silent(refs[k], silence_threshold) or _any_silent(ests[k], silence_threshold):
            if compute_permutation:
                perm[k] = -1
            continue
        stats = _segment_stats(refs[k], ests[k], filter_length)
        pair_sdr, pair_sir, pair_sar = np.broadcast_arrays(
            *_sources_criteria(stats, n, filter_length)
        )
        if compute_permutation:
            perm[k] = _best_permutation(pair_sir)
        sdr[k], sir[k], sar[k] = (m[np.arange(n), perm[k]] for m in (pair_sdr, pair_sir, pair_sar))
    shape = (*lead, n)
    return BSSResult(sdr.reshape(shape), sir.reshape(shape), sar.reshape(shape),
                     perm.reshape(shape))


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
    (sum |x| <= silence_threshold) are NaN. ``window`` and ``hop`` are in samples.
    """
    if version not in ("v3", "v4"):
        raise ValueError(f"unknown BSS-eval version {version!r}: use 'v3' or 'v4'")
    references, estimates = _check_pair(references, estimates)
    if references.ndim != 2:
        raise ValueError(f"framewise BSS-eval takes (sources, samples), got {references.shape}")
    n, n_samples = references.shape
    slices = frame_slices(n_samples, window, hop)
    scores = np.full((4, n, len(slices)), np.nan)  # sdr, isr, sir, sar
    glob = None
    if version == "v4" and not (_any_silent(references, silence_threshold)
                                or _any_silent(estimates, silence_threshold)):
        glob = _filters(_segment_stats(references, estimates, filter_length), n, filter_length)
    for t, win in enumerate(slices):
        refs, ests = references[:, win], estimates[:, win]
        if _any_silent(refs, silence_threshold) or _any_silent(ests, silence_threshold):
            continue
        stats = _segment_stats(refs, ests, filter_length)
        if version == "v3":
            sdr, sir, sar = np.broadcast_arrays(*_sources_criteria(stats, n, filter_length))
            scores[[0, 2, 3], :, t] = [m[np.arange(n), np.arange(n)] for m in (sdr, sir, sar)]
        elif glob is not None:
            crit = np.broadcast_arrays(*_images_criteria(stats, glob, refs, ests, filter_length))
            scores[:, :, t] = [m[np.arange(n), np.arange(n)] for m in crit]
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
