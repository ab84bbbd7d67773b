"""The separation path: formats kept, stems summing to the mix, full band, chunking, options, API.

All models are tiny and untrained (fixed seed): these tests check the mechanics, not quality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cusep
from cusep.errors import CusepError
from cusep.runtime import cpu_supports_bf16, resolve_device
from cusep.separate import (
    Separator,
    SeparatorConfig,
    crossfade_window,
)


def rel_rms(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean((estimate - reference) ** 2) / np.mean(reference**2)))


def band_energy(x: np.ndarray, rate: int, low: float, high: float = np.inf) -> float:
    """Energy of x (..., samples) between low and high Hz."""
    spec = np.fft.rfft(x, axis=-1)
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / rate)
    band = (freqs >= low) & (freqs < high)
    return float(np.sum(np.abs(spec[..., band]) ** 2))


@pytest.fixture(scope="module")
def sep(tiny_model_dir) -> Separator:
    return Separator(tiny_model_dir, device="cpu", config=SeparatorConfig(precision="fp32"))


def short_sep(path, **config) -> Separator:
    return Separator(path, device="cpu", config=SeparatorConfig(precision="fp32", **config))


# ------------------------------------------------------------------------ formats and the sum


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_stems_keep_rate_channels_length_and_sum_to_mix(short_model_dir, make_signal, rate,
                                                        channels):
    x = make_signal(rate, 1.3, channels, seed=rate + channels)
    x = x[:, : x.shape[-1] - 7]  # a length that is no round number
    stems = short_sep(short_model_dir).separate(x, rate, ["vn", "vc"])
    assert list(stems) == ["vn", "vc"]
    for stem in stems.values():
        assert stem.shape == x.shape
        assert stem.dtype == np.float32
        assert np.isfinite(stem).all()
        assert np.abs(stem).max() > 1e-3  # the untrained model still passes sound to both
    assert rel_rms(stems["vn"] + stems["vc"], x) < 1e-3


def test_raw_estimates_are_the_unconstrained_ones(tiny_model_dir, make_signal):
    x = make_signal(11025, 1.5, 2, seed=3)
    mixed = Separator(tiny_model_dir, device="cpu", config=SeparatorConfig(
        precision="fp32", wiener_iterations=2)).separate(x, 11025, "vn,vc,fl")
    raw = Separator(tiny_model_dir, device="cpu", config=SeparatorConfig(
        precision="fp32", residual=False, wiener_iterations=2)).separate(x, 11025, "vn,vc,fl")
    mixed_err = rel_rms(sum(mixed.values()), x)
    raw_err = rel_rms(sum(raw.values()), x)
    assert mixed_err < 1e-3
    assert raw_err > 10 * mixed_err  # the EM estimates miss part of the mix; nothing adds it back
    assert max(np.abs(raw[c] - mixed[c]).max() for c in raw) > 1e-4


def test_full_band_content_above_model_nyquist(tiny_model_dir):
    """44.1 kHz input with an 8 kHz partial: the model sees 0-5.5 kHz, the stems keep 8 kHz."""
    rate = 44100
    t = np.arange(int(1.5 * rate)) / rate
    x = (0.2 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 8000 * t)).astype(np.float32)
    x_high = band_energy(x, rate, 5500)

    sep = Separator(tiny_model_dir, device="cpu", config=SeparatorConfig(precision="fp32"))
    stems = sep.separate(x, rate, ["vn", "fl"])
    total = stems["vn"] + stems["fl"]
    assert rel_rms(total, x) < 1e-3
    assert band_energy(total, rate, 5500) == pytest.approx(x_high, rel=1e-2)

    # Without the residual only the extended masks carry the 8 kHz partial into the stems.
    raw = Separator(tiny_model_dir, device="cpu", config=SeparatorConfig(
        precision="fp32", residual=False, wiener_iterations=0)).separate(x, rate, ["vn", "fl"])
    high = [band_energy(s, rate, 5500) for s in raw.values()]
    assert sum(high) > 0.5 * x_high
    assert max(high) > 0.25 * x_high


# ------------------------------------------------------------------------------------ chunking


def test_batch_size_does_not_change_the_result(short_model_dir, make_signal):
    x = make_signal(11025, 4.0, 1, seed=11)  # 4 windows of the short model
    one = short_sep(short_model_dir, batch_size=1).separate(x, 11025, ["vn", "va"])
    four = short_sep(short_model_dir, batch_size=4).separate(x, 11025, ["vn", "va"])
    for code in one:
        np.testing.assert_allclose(one[code], four[code], atol=1e-5)


@pytest.mark.parametrize(("rate", "channels"), [(22050, 2), (8000, 1), (44100, 1)])
def test_no_seams_one_instrument_returns_the_mix(short_model_dir, make_signal, rate, channels):
    """One requested instrument takes the whole mix: any seam of the overlap-add would show."""
    x = make_signal(rate, 3.5, channels, seed=rate)
    x = x[..., : x.shape[-1] - 3]
    out = short_sep(short_model_dir, batch_size=3).separate(x, rate, ["vc"])["vc"]
    assert out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=1e-4)


def test_iter_blocks_concatenate_to_separate(short_model_dir, make_signal):
    sep = short_sep(short_model_dir, batch_size=2)
    x = make_signal(16000, 4.0, 1, seed=5)
    blocks = list(sep.iter_blocks(x, 16000, ["vn", "tpt"]))
    assert len(blocks) > 1
    assert all(b.shape[:2] == (2, 1) for b in blocks)
    joined = np.concatenate(blocks, axis=-1)
    stems = sep.separate(x[0], 16000, ["vn", "tpt"])
    np.testing.assert_array_equal(joined[0, 0], stems["vn"])
    np.testing.assert_array_equal(joined[1, 0], stems["tpt"])


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (11025, 1), (48000, 3)])
def test_streamed_input_gives_the_array_result(short_model_dir, make_signal, rate, channels):
    sep = short_sep(short_model_dir, batch_size=2)
    x = make_signal(rate, 7.3, channels, seed=3)
    whole = np.concatenate(list(sep.iter_blocks(x, rate, ["vn", "vc"], rest=True)), axis=-1)
    pulled: list[int] = []

    def blocks(size: int = 5003):
        for i in range(0, x.shape[-1], size):
            pulled.append(i + size)
            yield x[:, i:i + size]

    out = sep.iter_blocks(blocks(), rate, ["vn", "vc"], rest=True)
    first = next(out)
    assert pulled[-1] < x.shape[-1]  # the first stems came before the input was all read
    streamed = np.concatenate([first, *out], axis=-1)
    np.testing.assert_array_equal(streamed, whole)


def test_streamed_input_errors(sep, make_signal):
    x = make_signal(11025, 12.0, 1, seed=4)
    bad = x.copy()
    bad[0, -5] = np.nan
    with pytest.raises(CusepError, match="NaN"):
        list(sep.iter_blocks((bad[:, i:i + 4096] for i in range(0, bad.shape[1], 4096)),
                             11025, ["vn"]))
    with pytest.raises(CusepError, match="too short"):
        list(sep.iter_blocks(iter([x[:, :100], x[:, 100:200]]), 11025, ["vn"]))
    with pytest.raises(CusepError, match="empty"):
        list(sep.iter_blocks(iter([]), 11025, ["vn"]))
    with pytest.raises(CusepError, match="one channel count"):
        list(sep.iter_blocks(iter([x[:, :50000], np.zeros((2, 50000), np.float32)]),
                             11025, ["vn"]))


def test_blocks_are_yielded_progressively(short_model_dir, make_signal):
    sep = short_sep(short_model_dir, batch_size=1)
    calls: list[int] = []
    process = sep._process

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return process(*args, **kwargs)

    sep._process = counting  # the instance attribute shadows the method
    x = make_signal(11025, 6.0, 1, seed=2)
    blocks = sep.iter_blocks(x, 11025, ["vn"])
    first = next(blocks)
    assert len(calls) == 1  # one window processed when the first block comes out
    rest = list(blocks)
    windows = len(calls)
    assert windows >= 5
    assert len(rest) + 1 == windows
    longest = max(b.shape[-1] for b in [first, *rest])
    assert longest <= sep.model.config.spectral.segment  # bounded by one window, not the input
    assert sum(b.shape[-1] for b in [first, *rest]) == x.shape[-1]


def test_progress_reports_up_to_the_length(short_model_dir, make_signal):
    sep = short_sep(short_model_dir, batch_size=2)
    x = make_signal(11025, 4.0, 1, seed=8)
    seen: list[tuple[int, int]] = []
    sep.separate(x, 11025, "vn", progress=lambda done, total: seen.append((done, total)))
    done = [d for d, _ in seen]
    assert len(seen) > 1
    assert done == sorted(done)
    assert seen[-1] == (x.shape[-1], x.shape[-1])


@pytest.mark.parametrize(("rate", "length"), [(44100, 4 * 65535 + 1), (48000, 285324)])
def test_exact_length_when_resampled_length_rounds_down(sep, rate, length):
    x = 0.1 * np.sin(np.arange(length, dtype=np.float32) * 0.05)
    out = Separator(sep.model, device="cpu", config=SeparatorConfig(
        precision="fp32", wiener_iterations=0)).separate(x, rate, ["vn"])["vn"]
    assert out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=1e-4)


def test_crossfade_window_never_zero():
    w = crossfade_window(100, 25)
    assert w.shape == (100,)
    assert (w > 0).all()
    assert w.max() == 1.0
    np.testing.assert_allclose(w[:25], w[::-1][:25])  # symmetric fades


# -------------------------------------------------------------------- options: filter, device


def test_wiener_iterations_0_1_2(tiny_model_dir, make_signal):
    x = make_signal(11025, 1.2, 2, seed=4)
    results = {}
    for iterations in (0, 1, 2):
        sep = Separator(tiny_model_dir, device="cpu", config=SeparatorConfig(
            precision="fp32", wiener_iterations=iterations))
        stems = sep.separate(x, 11025, ["vn", "vc"])
        assert all(np.isfinite(s).all() for s in stems.values())
        assert rel_rms(stems["vn"] + stems["vc"], x) < 1e-3
        results[iterations] = stems["vn"]
    assert np.abs(results[0] - results[2]).max() > 1e-4  # the EM does something


def test_device_cpu_and_auto(tiny_model_dir):
    assert Separator(tiny_model_dir, device="cpu").device == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert Separator(tiny_model_dir, device="auto").device.type == expected
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x", ""])
def test_bad_device_is_a_clear_error(device):
    with pytest.raises(CusepError, match="device"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(CusepError, match="--device cpu"):
        resolve_device("cuda")


def test_precision_fp32_auto_and_bf16_give_close_masks(tiny_model_dir, make_signal):
    """Soft masks without EM or residual: the stems are the masks times the mix."""
    x = make_signal(11025, 2.0, 1, seed=6)

    def run(precision: str) -> tuple[str, dict[str, np.ndarray]]:
        sep = Separator(tiny_model_dir, device="cpu", config=SeparatorConfig(
            precision=precision, wiener_iterations=0, residual=False))
        return sep.precision, sep.separate(x, 11025, ["vn", "vc", "fl"])

    _, ref = run("fp32")
    name, auto = run("auto")
    assert name == ("bf16" if cpu_supports_bf16() else "fp32")
    name, bf16 = run("bf16")
    assert name == "bf16"
    for code in ref:
        assert rel_rms(auto[code], ref[code]) < 2e-2
        assert rel_rms(bf16[code], ref[code]) < 2e-2


def test_sample_rate_outside_the_range_is_refused(short_model_dir):
    with pytest.raises(CusepError, match=r"sample rate 1 Hz is outside 1000\.\.768000 Hz"):
        short_sep(short_model_dir).separate(np.zeros((1, 50000), np.float32), 1, ["vn"])


@pytest.mark.parametrize(("field", "value", "match"), [
    ("wiener_iterations", -1, "--wiener-iterations"),
    ("wiener_iterations", 100000, "must be in 0..20"),
    ("overlap", 1.0, "--overlap"),
    ("overlap", -0.1, "--overlap"),
    ("batch_size", 0, "--batch-size"),
])
def test_separator_config_rejects_bad_values(field, value, match):
    with pytest.raises(CusepError, match=match):
        SeparatorConfig(**{field: value})


# ----------------------------------------------------------------------------- the Python API


def test_api_returns_dict_of_stems(tiny_model_dir, make_signal):
    x = make_signal(11025, 1.0, 2, seed=9)
    stems = cusep.separate(x, 11025, instruments="vc,Violin", model=tiny_model_dir, device="cpu")
    assert isinstance(stems, dict)
    assert list(stems) == ["vc", "vn"]  # requested order
    assert all(s.shape == x.shape for s in stems.values())
    assert rel_rms(stems["vc"] + stems["vn"], x) < 1e-3


def test_api_one_dimensional_in_one_dimensional_out(tiny_model_dir, make_signal):
    x = make_signal(8000, 1.0, 1, seed=10)[0]
    stems = cusep.separate(torch.from_numpy(x), 8000, instruments=["flute", "CELLO"],
                           model=str(tiny_model_dir), device="cpu", wiener_iterations=1)
    assert list(stems) == ["fl", "vc"]
    for stem in stems.values():
        assert stem.shape == x.shape
    assert rel_rms(stems["fl"] + stems["vc"], x) < 1e-3


def test_silence_gives_silent_stems(sep):
    stems = sep.separate(np.zeros((2, 30000), np.float32), 22050, ["vn", "vc"])
    for stem in stems.values():
        assert stem.shape == (2, 30000)
        assert np.isfinite(stem).all()
        assert not stem.any()


def test_shortest_input_is_one_frame(sep):
    x = np.sin(np.arange(1022, dtype=np.float32) * 0.1)
    out = sep.separate(x, 11025, ["vn"])["vn"]
    np.testing.assert_allclose(out, x, atol=1e-4)


@pytest.mark.parametrize(("audio", "rate", "match"), [
    (np.zeros((1, 0), np.float32), 11025, "empty"),
    (np.zeros(1021, np.float32), 11025, "too short"),
    (np.zeros(2000, np.float32), 22050, "too short"),
    (np.zeros((2, 3, 4000), np.float32), 11025, "channels, samples"),
    (np.zeros(4000, np.float32), 0, "sample rate"),
    (np.array([0.0, np.nan] * 2000, np.float32), 11025, "NaN"),
    (np.array([0.0, np.inf] * 2000, np.float32), 11025, "NaN or infinite"),
])
def test_bad_signals_are_clear_errors(sep, audio, rate, match):
    with pytest.raises(CusepError, match=match):
        sep.separate(audio, rate, ["vn"])


def test_samples_by_channels_layout_gets_a_hint(sep):
    with pytest.raises(CusepError, match=r"\(channels, samples\)"):
        sep.separate(np.zeros((20000, 2), np.float32), 22050, ["vn"])


def test_unknown_instrument_names_the_closest(sep):
    with pytest.raises(CusepError, match=r"Did you mean 'vc'.*Valid codes: vn, va, vc"):
        sep.separate(np.zeros(4000, np.float32), 11025, "vn,cello2")


def test_instrument_the_model_does_not_know(make_model_dir):
    duo = make_model_dir("duo", instruments=("vn", "vc"), context_dim=2)
    sep = Separator(duo, device="cpu")
    assert sep.instruments == ("vn", "vc")
    with pytest.raises(CusepError, match=r"cannot separate fl \(flute\); it knows: vn, vc"):
        sep.separate(np.zeros(4000, np.float32), 11025, "vn,fl")


@pytest.mark.parametrize("conditioning", ["none", "film-bottleneck"])
def test_other_conditionings_separate(make_model_dir, make_signal, conditioning):
    path = make_model_dir(conditioning, conditioning=conditioning)
    x = make_signal(11025, 1.0, 1, seed=1)
    stems = Separator(path, device="cpu").separate(x, 11025, ["vn", "va", "vc"])
    assert rel_rms(sum(stems.values()), x) < 1e-3


# ------------------------------------------------------------------------ partial lists, floor


def test_rest_stem_holds_what_the_named_leave_and_stems_sum(short_model_dir, make_signal):
    x = make_signal(22050, 1.5, 2, seed=11)
    sep = short_sep(short_model_dir, wiener_iterations=0)
    part = sep.separate(x, 22050, ["vn"], rest=True)
    assert list(part) == ["vn", "rest"]
    assert rel_rms(part["vn"] + part["rest"], x) < 1e-3
    assert np.abs(part["rest"]).max() > 1e-3 and np.abs(part["vn"]).max() > 1e-3
    # raw soft masks: the rest's mask is 1 - the named one's, so the sum holds without help
    raw = short_sep(short_model_dir, wiener_iterations=0, residual=False)
    alone = raw.separate(x, 22050, ["vn"], rest=True)
    assert rel_rms(alone["vn"] + alone["rest"], x) < 1e-2
    api = cusep.separate(x, 22050, "vn", model=short_model_dir, device="cpu", rest=True)
    assert list(api) == ["vn", "rest"]


def test_mix_floor_blends_towards_the_mixture_and_keeps_the_sum(short_model_dir, make_signal):
    x = make_signal(11025, 1.5, 1, seed=12)
    plain = short_sep(short_model_dir).separate(x, 11025, ["vn", "vc"])
    floored = short_sep(short_model_dir, mix_floor=0.4).separate(x, 11025, ["vn", "vc"])
    for code in ("vn", "vc"):
        assert rel_rms(floored[code], 0.6 * plain[code] + 0.4 * x / 2) < 2e-3
    assert rel_rms(floored["vn"] + floored["vc"], x) < 1e-3
    with pytest.raises(CusepError, match="mix-floor"):
        SeparatorConfig(mix_floor=1.5)


def test_many_channels_are_filtered_in_groups(short_model_dir, make_signal, monkeypatch):
    import importlib

    separate_module = importlib.import_module("cusep.separate")  # cusep.separate: the function
    x = make_signal(11025, 1.2, 10, seed=13)
    sep = short_sep(short_model_dir, wiener_iterations=0)
    grouped = sep.separate(x, 11025, ["vn", "vc"])
    monkeypatch.setattr(separate_module, "CHANNEL_GROUP", 16)
    whole = sep.separate(x, 11025, ["vn", "vc"])
    for code in ("vn", "vc"):  # soft masks filter each channel alone: grouping changes nothing
        assert grouped[code].shape == x.shape
        np.testing.assert_allclose(grouped[code], whole[code], rtol=0, atol=1e-5)
    assert rel_rms(grouped["vn"] + grouped["vc"], x) < 1e-3


# --------------------------------------------------- mask mapping onto the input's STFT grid


def _grid(rate: int, model_rate: int = 11025, n_fft: int = 1022, hop: int = 256,
          segment: int = 65535) -> tuple[int, int, int]:
    """The input grid _process uses: (in_fft, in_hop, frames of one window)."""
    ratio = rate / model_rate
    in_fft, in_hop = 2 * round(n_fft * ratio / 2), round(hop * ratio)
    return in_fft, in_hop, int(np.ceil(segment * ratio)) // in_hop + 1


def _interpolated(masks: torch.Tensor, bins: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """extend_and_map as it was: linear interpolation on both axes, whatever the positions."""
    from cusep.spectral import interp_axis

    f = masks.shape[-2]
    top = masks[..., f - f // 4:, :].mean(dim=-2, keepdim=True)
    extended = torch.cat([masks, top], dim=-2)
    return interp_axis(interp_axis(extended, bins.clamp(max=f), dim=-2), frames, dim=-1)


@pytest.mark.parametrize(("rate", "exact"), [(11025, True), (22050, True), (44100, True),
                                             (48000, False), (8000, False), (32000, False)])
def test_mask_mapping_copies_whole_positions_and_equals_interpolation(rate, exact):
    from cusep.separate import extend_and_map, mask_positions

    in_fft, in_hop, n_frames = _grid(rate)
    bins, frames = mask_positions(11025, 1022, 256, rate, in_fft, in_hop, n_frames)
    assert bins.shape == (in_fft // 2 + 1,) and frames.shape == (n_frames,)
    # the positions as a float64 product of rates, as they were computed before
    ref_bins = torch.arange(in_fft // 2 + 1, dtype=torch.float64) * rate / in_fft * 1022 / 11025
    ref_frames = torch.arange(n_frames, dtype=torch.float64) * in_hop / rate * 11025 / 256
    torch.testing.assert_close(bins, ref_bins.float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(frames, ref_frames.float(), rtol=0, atol=1e-5)
    whole = torch.equal(bins, bins.round()) and torch.equal(frames, frames.round())
    assert whole == exact
    gen = torch.Generator().manual_seed(rate)
    masks = torch.rand(2, 3, 512, 256, generator=gen)
    out = extend_and_map(masks, bins, frames)
    assert out.shape == (2, 3, len(bins), len(frames))
    torch.testing.assert_close(out, _interpolated(masks, bins, frames), rtol=0, atol=1e-6)
    if exact:  # copied rows: the model's own bins, then the extended top row
        f = min(len(bins), 512)
        assert torch.equal(out[..., :f, :256], masks[..., :f, :])
        top = masks[..., 384:, :].mean(-2)
        assert all(torch.equal(out[..., k, :256], top) for k in range(512, len(bins), 97))


# ------------------------------------------- the filter stage against the norbert-layout path


def _consistent_reference(estimates: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """The residual sharing as it was, on complex estimates (..., K) and mix (...)."""
    residual = mix - estimates.sum(-1)
    power = estimates.real**2 + estimates.imag**2
    total = power.sum(-1, keepdim=True)
    k = estimates.shape[-1]
    share = torch.where(total >= 1e-30, power / total.clamp_min(1e-30),
                        torch.full_like(power, 1 / k))
    return estimates + residual.unsqueeze(-1) * share


def _filter_reference(config: SeparatorConfig, m: torch.Tensor, chunk: torch.Tensor,
                      in_fft: int, in_hop: int) -> torch.Tensor:
    """Separator._filter as it was: norbert's layout, complex residual, floor, permutes."""
    from cusep.spectral import istft, stft
    from cusep.wiener import wiener

    x = stft(chunk, in_fft, in_hop)
    v = (m.unsqueeze(2) * x.abs().unsqueeze(1)).permute(0, 4, 3, 2, 1)
    xw = x.permute(0, 3, 2, 1)
    y = wiener(v.contiguous(), xw.contiguous(), iterations=config.wiener_iterations)
    if config.residual:
        y = _consistent_reference(y, xw)
        if config.mix_floor > 0:
            y = (1 - config.mix_floor) * y + config.mix_floor / y.shape[-1] * xw.unsqueeze(-1)
    return istft(y.permute(0, 4, 3, 2, 1), chunk.shape[-1], in_fft, in_hop)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("iterations", [0, 1, 2])
@pytest.mark.parametrize(("residual", "floor"), [(True, 0.1), (True, 0.0), (False, 0.1)])
def test_filter_equals_the_norbert_layout_path(sep, make_signal, channels, iterations,
                                               residual, floor):
    rate, in_fft, in_hop = 22050, 510, 128
    x = make_signal(rate, 0.4, channels, seed=channels, amp=30.0 if iterations == 1 else 0.3)
    chunk = torch.from_numpy(np.stack([x, 0.5 * x[:, ::-1].copy()]))  # (2, C, n)
    chunk[1, :, 2000:3000] = 0  # silent bins: the residual's 1/K share
    frames = chunk.shape[-1] // in_hop + 1
    gen = torch.Generator().manual_seed(channels * 10 + iterations)
    m = torch.rand(2, 3, in_fft // 2 + 1, frames, generator=gen)
    m[:, :, 40:50] = 0  # masks all zero: the residual's 1/K share of a sounding mixture
    m[:, :, 60:70] = 1e-20  # masks whose estimates' power underflows: the same 1/K share
    config = SeparatorConfig(precision="fp32", wiener_iterations=iterations, residual=residual,
                             mix_floor=floor)
    sep = Separator(sep.model, device="cpu", config=config)
    out = sep._filter(m, chunk, in_fft, in_hop)
    ref = _filter_reference(config, m, chunk, in_fft, in_hop)
    assert out.shape == ref.shape == (2, 3, channels, chunk.shape[-1])
    assert out.dtype == torch.float32
    err = (out - ref).abs().max() / ref.abs().max()
    assert err <= 1e-4, err
    if residual:  # the stems sum to the input (the last one is what the others leave)
        torch.testing.assert_close(out.sum(1), chunk, rtol=0, atol=1e-6 * float(chunk.abs().max()))
