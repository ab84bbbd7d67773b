"""cusep.metrics against mir_eval / museval and against the formulas, on seeded synthetic audio."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from signals import SR, make_estimates, make_references

from cusep import metrics

TOL_DB = 0.01

mir_sep = pytest.importorskip("mir_eval.separation")


def _museval_metrics():
    """museval's metrics module, loaded from its file: ``import museval`` runs the package's
    ``__init__``, which imports musdb -> stempeg, and stempeg raises RuntimeError on a machine
    without ffmpeg. The metrics module itself needs only numpy and scipy."""
    spec = importlib.util.find_spec("museval")
    if spec is None or spec.origin is None:
        pytest.skip("museval is not installed", allow_module_level=True)
    path = Path(spec.origin).with_name("metrics.py")
    module_spec = importlib.util.spec_from_file_location("museval_metrics", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


museval_metrics = _museval_metrics()
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # mir_eval 0.8 deprecations


def assert_close_db(actual: np.ndarray, expected: np.ndarray) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL_DB, equal_nan=True)


# ----------------------------------------------------------------------------- BSS-eval v3


@pytest.mark.parametrize(("n", "seconds"), [(2, 1.5), (3, 1.5), (4, 1.0)])
def test_bss_eval_sources_matches_mir_eval(n: int, seconds: float) -> None:
    refs = make_references(n, int(seconds * SR), seed=n)
    ests = make_estimates(refs, seed=n)
    sdr, sir, sar, perm = mir_sep.bss_eval_sources(refs, ests, compute_permutation=False)
    result = metrics.bss_eval_sources(refs, ests)
    assert_close_db(result.sdr, sdr)
    assert_close_db(result.sir, sir)
    assert_close_db(result.sar, sar)
    np.testing.assert_array_equal(result.perm, perm)
    assert result.isr is None
    assert np.ptp(sdr) > 1.0  # the sources are scored differently: a real comparison


def test_bss_eval_sources_permutation_matches_mir_eval() -> None:
    refs = make_references(3, SR, seed=11)
    order = np.array([2, 0, 1])
    ests = make_estimates(refs, seed=11)[order]
    sdr, sir, sar, perm = mir_sep.bss_eval_sources(refs, ests, compute_permutation=True)
    result = metrics.bss_eval_sources(refs, ests, compute_permutation=True)
    np.testing.assert_array_equal(result.perm, perm)
    np.testing.assert_array_equal(result.perm, np.argsort(order))
    assert_close_db(result.sdr, sdr)
    assert_close_db(result.sir, sir)
    assert_close_db(result.sar, sar)
    # without the search, the shuffled estimates score far worse
    assert np.all(metrics.bss_eval_sources(refs, ests).sir < result.sir - 5)


def test_permutation_search_with_many_sources_uses_assignment() -> None:
    refs = make_references(9, 12000, seed=3)
    order = np.random.default_rng(0).permutation(9)
    ests = make_estimates(refs, seed=3)[order]
    result = metrics.bss_eval_sources(refs, ests, compute_permutation=True)
    np.testing.assert_array_equal(result.perm, np.argsort(order))
    direct = metrics.bss_eval_sources(refs, ests[result.perm])
    np.testing.assert_allclose(result.sir, direct.sir, atol=1e-9)


def test_bss_eval_sources_batched_equals_looped_and_accepts_torch() -> None:
    refs = np.stack([make_references(2, 4000, seed=s) for s in range(3)])
    ests = np.stack([make_estimates(r, seed=s) for s, r in enumerate(refs)])
    batched = metrics.bss_eval_sources(torch.from_numpy(refs).float(), ests.astype(np.float32))
    assert batched.sdr.shape == (3, 2)
    for k in range(3):
        single = metrics.bss_eval_sources(refs[k].astype(np.float32), ests[k].astype(np.float32))
        np.testing.assert_allclose(batched.sdr[k], single.sdr, atol=1e-9)
        np.testing.assert_allclose(batched.sir[k], single.sir, atol=1e-9)
        np.testing.assert_allclose(batched.sar[k], single.sar, atol=1e-9)


def test_silent_segments_are_nan() -> None:
    refs = np.stack([make_references(2, 3000, seed=s) for s in range(2)])
    ests = np.stack([make_estimates(r, seed=s) for s, r in enumerate(refs)])
    ests[1, 0] = 0.0
    result = metrics.bss_eval_sources(refs, ests, compute_permutation=True)
    assert np.isnan(result.sdr[1]).all() and np.isnan(result.sar[1]).all()
    np.testing.assert_array_equal(result.perm[1], [-1, -1])
    assert np.isfinite(result.sdr[0]).all()
    np.testing.assert_array_equal(result.perm[0], [0, 1])


def test_estimates_in_the_reference_span_have_no_artifacts() -> None:
    refs = make_references(2, 3000, seed=5)
    result = metrics.bss_eval_sources(refs, refs + 0.01 * refs[::-1])
    assert np.all(result.sdr > 30) and np.all(result.sar > 100)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="same shape"):
        metrics.bss_eval_sources(np.ones((2, 100)), np.ones((3, 100)))


# ---------------------------------------------------------------------------- framewise


def test_framewise_v3_matches_mir_eval() -> None:
    refs = make_references(2, 2 * SR, seed=21)
    ests = make_estimates(refs, seed=21)
    refs[1, SR // 2 : SR + 200] = 0.0  # silent over the whole 3rd window only
    window = hop = SR // 2
    sdr, sir, sar, _ = mir_sep.bss_eval_sources_framewise(refs, ests, window, hop, False)
    result = metrics.bss_eval_framewise(refs, ests, window, hop, silence_threshold=0.0)
    assert result.sdr.shape == (2, 4)
    assert np.isnan(result.sdr[:, 1]).all() and not np.isnan(result.sdr[:, [0, 2, 3]]).any()
    assert_close_db(result.sdr, sdr)
    assert_close_db(result.sir, sir)
    assert_close_db(result.sar, sar)


def test_framewise_v4_matches_museval() -> None:
    refs = make_references(3, 2 * SR, seed=31)
    ests = make_estimates(refs, seed=31)
    refs[2, SR // 2 : SR] = 0.0
    window, hop = SR // 2, SR // 4
    sdr, isr, sir, sar, _ = museval_metrics.bss_eval(
        refs[..., None], ests[..., None], window=window, hop=hop
    )
    result = metrics.bss_eval_framewise(refs, ests, window, hop, version="v4",
                                        silence_threshold=0.0)
    assert result.sdr.shape == (3, 7)
    assert np.isnan(result.sdr).any()
    assert_close_db(result.sdr, sdr)
    assert_close_db(result.isr, isr)
    assert_close_db(result.sir, sir)
    assert_close_db(result.sar, sar)


def test_framewise_window_equals_whole_segment_call() -> None:
    refs = make_references(2, 6000, seed=41)
    ests = make_estimates(refs, seed=41)
    frames = metrics.bss_eval_framewise(refs, ests, window=2000, hop=1000)
    assert frames.sdr.shape == (2, 5)
    middle = metrics.bss_eval_sources(refs[:, 2000:4000], ests[:, 2000:4000])
    np.testing.assert_allclose(frames.sdr[:, 2], middle.sdr, atol=1e-9)
    np.testing.assert_allclose(frames.sar[:, 2], middle.sar, atol=1e-9)


def test_frame_slices_and_aggregation() -> None:
    assert metrics.frame_slices(10, 4, 2) == [slice(0, 4), slice(2, 6), slice(4, 8), slice(6, 10)]
    assert metrics.frame_slices(10, 20, 5) == [slice(0, 10)]
    values = np.array([[1.0, np.nan, 3.0, 10.0], [np.nan, np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(metrics.nan_aggregate(values), [3.0, np.nan])
    np.testing.assert_allclose(metrics.nan_aggregate(values, "mean"), [14 / 3, np.nan])
    result = metrics.BSSResult(values, values + 1, values + 2, np.arange(2), values - 1)
    agg = metrics.aggregate_frames(result)
    np.testing.assert_array_equal(agg.sir, [4.0, np.nan])
    np.testing.assert_array_equal(agg.isr, [2.0, np.nan])


# -------------------------------------------------------------------- SI-SDR, SD-SDR, PES


def direct_si_sdr(est: np.ndarray, ref: np.ndarray, eps: float, scale_dependent: bool) -> float:
    alpha = float(np.dot(est, ref)) / (float(np.dot(ref, ref)) + eps)
    target = alpha * ref
    noise = (ref - est) if scale_dependent else (target - est)
    return 10 * np.log10(np.dot(target, target) / (np.dot(noise, noise) + eps) + eps)


def test_si_sdr_and_sd_sdr_match_the_formula() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 4, 500))
    est = 0.7 * ref + 0.3 * rng.standard_normal((3, 4, 500))
    si, sd = metrics.si_sdr(est, ref), metrics.sd_sdr(est, ref)
    assert si.shape == sd.shape == (3, 4)
    for idx in np.ndindex(3, 4):
        assert si[idx] == pytest.approx(direct_si_sdr(est[idx], ref[idx], 1e-8, False), abs=1e-9)
        assert sd[idx] == pytest.approx(direct_si_sdr(est[idx], ref[idx], 1e-8, True), abs=1e-9)
    assert np.all(sd < si)


def test_si_sdr_analytic_cases() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(2000)
    noise = rng.standard_normal(2000)
    noise -= np.dot(noise, ref) / np.dot(ref, ref) * ref  # orthogonal to ref
    noise *= 0.1 * np.linalg.norm(ref) / np.linalg.norm(noise)  # 20 dB below
    assert metrics.si_sdr(ref + noise, ref) == pytest.approx(20.0, abs=1e-6)
    assert metrics.si_sdr(3.0 * (ref + noise), ref) == pytest.approx(20.0, abs=1e-6)
    # a scaled reference: SI-SDR only limited by eps, SD-SDR = 20 log10(|g| / |1 - g|)
    for gain in (0.5, 2.0, 0.9):
        assert metrics.si_sdr(gain * ref, ref) > 80
        expected = 20 * np.log10(gain / abs(1 - gain))
        assert metrics.sd_sdr(gain * ref, ref) == pytest.approx(expected, abs=1e-6)
    assert metrics.sd_sdr(0.5 * ref, ref) == pytest.approx(0.0, abs=1e-6)


def test_pes_and_silence() -> None:
    silent = np.zeros((2, 1000))
    np.testing.assert_allclose(metrics.pes(silent), [-90.0, -90.0])
    assert metrics.pes(silent, eps=1e-8) == pytest.approx(-80.0)
    assert metrics.pes(np.full(100, 0.1)) == pytest.approx(0.0, abs=1e-6)  # energy 1
    x = np.zeros((3, 100))
    x[1, 0] = 1e-6
    x[2, :] = 1e-3
    np.testing.assert_array_equal(metrics.is_silent(x), [True, True, False])
    np.testing.assert_array_equal(metrics.is_silent(x, threshold=0.0), [True, False, False])


def test_torch_inputs_match_numpy_and_keep_gradients() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((2, 3, 800))
    est = ref + 0.5 * rng.standard_normal((2, 3, 800))
    est_t = torch.tensor(est, requires_grad=True)
    si_t = metrics.si_sdr(est_t, torch.tensor(ref))
    assert isinstance(si_t, torch.Tensor) and si_t.shape == (2, 3)
    np.testing.assert_allclose(si_t.detach().numpy(), metrics.si_sdr(est, ref), atol=1e-9)
    np.testing.assert_allclose(metrics.sd_sdr(est_t, ref).detach().numpy(),
                               metrics.sd_sdr(est, ref), atol=1e-9)
    np.testing.assert_allclose(metrics.pes(est_t).detach().numpy(), metrics.pes(est), atol=1e-9)
    assert metrics.is_silent(torch.zeros(2, 5)).tolist() == [True, True]
    (-si_t.mean()).backward()
    assert est_t.grad is not None and torch.isfinite(est_t.grad).all()


def test_reliability_bins_and_expected_calibration_error():
    probs = np.array([[0.05, 0.15], [0.15, 0.95], [0.95, 0.55]])
    targets = np.array([[0, 1], [0, 1], [1, 0]])
    r = metrics.reliability(probs, targets, bins=10)
    assert r["count"].tolist() == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]
    np.testing.assert_allclose(r["confidence"][[0, 1, 5, 9]], [0.05, 0.15, 0.55, 0.95])
    np.testing.assert_allclose(r["observed"][[0, 1, 5, 9]], [0.0, 0.5, 0.0, 1.0])
    assert np.isnan(r["observed"][2])
    # |0 - .05| + 2 |.5 - .15| + |0 - .55| + 2 |1 - .95|, over 6 probabilities
    assert r["ece"] == pytest.approx((0.05 + 0.7 + 0.55 + 0.1) / 6)
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    assert metrics.reliability(p, rng.random(20000) < p)["ece"] < 0.02  # calibrated
    assert metrics.reliability(p, rng.random(20000) < 0.5)["ece"] > 0.2  # not
    assert metrics.reliability(np.array([1.0, 0.0]), np.array([1, 0]))["ece"] == 0.0
