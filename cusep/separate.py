"""The Separator: one signal in, one stem per requested instrument out.

The flow per window (overlapping windows of one model segment, triangular cross-fade):
mono mixture at the model rate -> STFT features -> ConditionedUNet masks -> masks mapped onto the
input's own STFT grid (full band: the top band's mask is extended above the model's Nyquist) ->
EM Wiener filter on every input channel -> mixture-consistent residual -> iSTFT at the input rate.
Windows are batched through the network and the filter; the output is produced in order, block by
block, so memory stays bounded whatever the length.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import wiener
from .audio import StreamResampler, to_mono
from .checkpoint import ModelDir, load_model
from .detect import Detector
from .errors import CusepError
from .guide import Prior, ScoreGuide
from .instruments import BY_CODE, label_vector, parse_instruments
from .model import ConditionedUNet
from .runtime import (
    Precision,
    autocast_dtype,
    check_length,
    check_rate,
    check_signal,
    precision_name,
    resolve_device,
)
from .score import Score
from .spectral import from_grid, interp_axis, istft, scale_magnitude, stft, to_grid
from .video import FrameProvider

CHANNEL_GROUP = 8  # channels filtered jointly; more are filtered in groups (bounded memory)
MAX_WIENER_ITERATIONS = 20  # each costs a full EM pass; more than a few never helped
Progress = Callable[[int, int], None]
Guide = Callable[[np.ndarray], np.ndarray]  # window starts (B,) -> gains (B, K, F or 1, T)


@dataclass(frozen=True)
class SeparatorConfig:
    """How a Separator runs a model (not what the model is)."""

    wiener_iterations: int = 0
    """EM Wiener iterations; 0 = soft masks. The paper used 2; 0 was measured better on real
    recordings (urmp-dev) and on held-out renders (README, "Defaults, measured")."""
    overlap: float = 0.25
    batch_size: int = 4
    precision: Precision = "auto"
    residual: bool = True
    """Distribute what the estimates miss so the stems sum to the mixture (off: raw estimates)."""
    mix_floor: float = 0.1
    """Safeguard: every stem is ``(1 - mix_floor) * estimate + mix_floor * mixture / K`` (K
    stems), so a poor estimate leans towards the mixture and the stems still sum to it (with
    ``residual``; raw estimates get no floor). 0.1 was chosen on validation renders."""

    def __post_init__(self) -> None:
        if not 0 <= self.wiener_iterations <= MAX_WIENER_ITERATIONS:
            raise CusepError(f"--wiener-iterations must be in 0..{MAX_WIENER_ITERATIONS} "
                             f"(got {self.wiener_iterations}); 0 = soft masks")
        if not 0.0 <= self.overlap < 1.0:
            raise CusepError("--overlap must be in [0, 1)")
        if self.batch_size < 1:
            raise CusepError("--batch-size must be at least 1")
        if not 0.0 <= self.mix_floor <= 1.0:
            raise CusepError("--mix-floor must be in [0, 1]")


def mask_positions(model_rate: int, n_fft: int, hop: int, in_rate: int, in_fft: int,
                   in_hop: int, in_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional (model bin, model frame) indices (len in_fft // 2 + 1,), (in_frames,) of every
    input-grid bin and frame.

    Input bins above the model's Nyquist point past the last model bin, where the caller puts
    the extended top-band mask. Each position is one rounding of an exact ratio of integers, so
    the grids of rates that are a multiple of the model's (22.05 and 44.1 kHz for 11025 Hz)
    give exact integers (:func:`extend_and_map` then copies rows instead of interpolating).
    """
    in_bins = in_fft // 2 + 1
    bins = (torch.arange(in_bins, dtype=torch.int64) * (in_rate * n_fft)).double()
    frames = (torch.arange(in_frames, dtype=torch.int64) * (in_hop * model_rate)).double()
    bins, frames = bins / (in_fft * model_rate), frames / (in_rate * hop)
    return bins.float(), frames.float()


def _map_axis(x: torch.Tensor, positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``interp_axis`` of x at ``positions`` along ``dim``; whole-number positions are copied
    (index_select, or x itself for 0, 1, ..., n - 1), which gives the same values."""
    n = x.shape[dim]
    if not torch.equal(positions, positions.round()):
        return interp_axis(x, positions, dim)
    index = positions.to(device=x.device, dtype=torch.int64).clamp_(0, n - 1)
    if len(index) == n and torch.equal(index, torch.arange(n, device=x.device)):
        return x
    return x.index_select(dim, index)


def extend_and_map(masks: torch.Tensor, bins: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Model-grid masks (..., F, T) -> input grid (..., len(bins), len(frames)).

    One extra row, the mean mask of the top quarter of the model's band, stands just above the
    model's Nyquist, so higher input frequencies get that band's mask instead of nothing.
    Frames first: the input grid has up to 4x the bins, not the frames (2.5x faster at 48 kHz).
    """
    f = masks.shape[-2]
    top = masks[..., f - f // 4:, :].mean(dim=-2, keepdim=True)
    extended = torch.cat([masks, top], dim=-2)
    out = _map_axis(extended, frames, dim=-1)
    return _map_axis(out, bins.clamp(max=f), dim=-2)


def _shares(power: torch.Tensor, dim: int) -> torch.Tensor:
    """Energy shares power / sum(power) along ``dim``, 1 / K where the sum is below 1e-30
    (gains of 1e-15 and less square to nothing: even shares keep the sum at 1); in place."""
    total = power.sum(dim, keepdim=True)
    shares = power.div_(total.clamp_min(1e-30))
    return shares.masked_fill_(total < 1e-30, 1 / power.shape[dim])


def consistent_gain(gain: torch.Tensor, floor: float = 0.0,
                    share: torch.Tensor | None = None) -> torch.Tensor:
    """The mixture-consistent residual and the mix floor for estimates y = g x (real gains).

    Each estimate gets its energy share |y_k|^2 / sum |y|^2 of the residual x - sum_k y_k,
    so the estimates sum to the mixture, then leans towards it:
    (1 - floor) y_k + floor s_k x, s_k = 1 / K or ``share`` (N, K, T), summing to 1 over K.
    With y = g x both stay a real gain of x.
    gain real (N, K, {1, C}, F, T) -> real (N, K, {1, C}, F, T) (the input is not modified).
    """
    k = gain.shape[1]
    left = (1 - gain.sum(1, keepdim=True)).mul_(1 - floor)  # of the residual, floored
    out = _shares(gain.square(), 1).mul_(left)
    out.add_(gain, alpha=1 - floor)
    if floor <= 0:
        return out
    if share is None:
        return out.add_(floor / k)
    return out.add_(share[:, :, None, None, :].to(out.dtype), alpha=floor)


def consistent_planar_(estimates: torch.Tensor, mix: torch.Tensor, floor: float = 0.0,
                       share: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`consistent_gain` for any estimates, in place, in the planar layout of
    :func:`cusep.wiener.em_planar`.

    estimates real (N, F, K, C, 2, T) (dim 4: real, imaginary), mix real (N, F, C, 2, T),
    share (N, K, T) or None -> the estimates, modified.
    """
    k = estimates.shape[2]
    residual = mix - estimates.sum(2)  # (N, F, C, 2, T)
    re, im = estimates.select(4, 0), estimates.select(4, 1)
    shares = _shares(re.square().addcmul_(im, im), 2)  # (N, F, K, C, T)
    estimates.addcmul_(residual.unsqueeze(2), shares.unsqueeze(4))
    if floor > 0 and share is None:
        estimates.mul_(1 - floor).add_(mix.unsqueeze(2), alpha=floor / k)
    elif floor > 0:
        weights = share[:, None, :, None, None, :].to(estimates.dtype)  # (N, 1, K, 1, 1, T)
        estimates.mul_(1 - floor).add_(mix.unsqueeze(2) * weights, alpha=floor)
    return estimates


def crossfade_window(length: int, overlap: int) -> np.ndarray:
    """Triangular fade-in/out weights (length,) for overlap-add; never zero."""
    t = np.arange(length, dtype=np.float64)
    ramp = np.minimum((t + 1) / (overlap + 1), (length - t) / (overlap + 1))
    return np.minimum(1.0, ramp).astype(np.float32)


class Separator:
    """Runs a separation model over signals of any length, rate and channel count.

    >>> sep = Separator("cusep-label-v2", device="cpu")
    >>> stems = sep.separate(audio, 44100, ["vn", "vc"])  # audio (channels, samples)
    """

    def __init__(self, model: str | Path | ModelDir | ConditionedUNet | None = None,
                 device: str | torch.device = "auto",
                 config: SeparatorConfig | None = None) -> None:
        self.device = resolve_device(device)
        self.config = config or SeparatorConfig()
        self.model_dir: ModelDir | None = None
        if isinstance(model, ConditionedUNet):
            self.model = model.to(self.device).eval()
        else:
            self.model, self.model_dir = load_model(model, device=self.device)
        self.dtype = autocast_dtype(self.device, self.config.precision)
        if self.device.type == "cpu":  # oneDNN convolutions are faster channels_last, fp32 too
            self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def instruments(self) -> tuple[str, ...]:
        """Instrument codes this model can separate."""
        return self.model.config.instruments

    @property
    def name(self) -> str:
        return self.model_dir.path.name if self.model_dir else "in-memory model"

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    def check_instruments(self, instruments: str | Sequence[str]) -> tuple[str, ...]:
        """Parse and check the requested instruments against the model's classes."""
        codes = parse_instruments(instruments)
        missing = [c for c in codes if c not in self.instruments]
        if missing:
            names = ", ".join(f"{c} ({BY_CODE[c].name})" for c in missing)
            raise CusepError(
                f"model '{self.name}' cannot separate {names}; "
                f"it knows: {', '.join(self.instruments)}"
            )
        return codes

    def score_guide(self, score: Score, codes: Sequence[str], prior: Prior = "harmonic"
                    ) -> ScoreGuide:
        """A :class:`~cusep.guide.ScoreGuide` of an aligned ``score`` on this model's grid."""
        spec = self.model.config.spectral
        return ScoreGuide(score, codes, spec.sample_rate, spec.n_fft, spec.hop,
                          spec.segment // spec.hop + 1, prior)

    @property
    def visual(self) -> bool:
        """True for a visually conditioned model (it needs a frame provider)."""
        return self.model.config.visual is not None

    def separate(self, audio: np.ndarray | torch.Tensor, sample_rate: int,
                 instruments: str | Sequence[str], progress: Progress | None = None,
                 visual: FrameProvider | None = None, rest: bool = False,
                 guide: Guide | None = None) -> dict[str, np.ndarray]:
        """audio (channels, samples) or (samples,) -> {code: stem with the input's shape}.

        ``visual``: for a visual model, the crops of the players for each window
        (:func:`cusep.video.frame_provider`); label models take the instruments' labels.
        ``rest``: the instruments are only some of those that play; a further stem ``rest``
        holds everything else (the stems still sum to the input). ``guide``: see
        :meth:`iter_blocks`.
        """
        codes = self.check_instruments(instruments)
        arr = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio)
        mono_input = arr.ndim == 1
        blocks = list(self.iter_blocks(arr, sample_rate, codes, progress, visual, rest,
                                       guide=guide))
        stems = np.concatenate(blocks, axis=-1)
        names = stem_names(codes, rest)
        return {c: (stems[i, 0] if mono_input else stems[i]) for i, c in enumerate(names)}

    def iter_blocks(self, audio: np.ndarray | Iterable[np.ndarray], sample_rate: int,
                    codes: Sequence[str], progress: Progress | None = None,
                    visual: FrameProvider | None = None, rest: bool = False,
                    total: int | None = None, guide: Guide | None = None
                    ) -> Iterator[np.ndarray]:
        """Yield consecutive output blocks (K, channels, n) covering the input exactly (K: the
        codes, and one more for ``rest``, last; see :func:`stem_names`).

        ``audio``: the signal (channels, samples), or its consecutive blocks (channels, n) of
        any sizes, e.g. :meth:`cusep.audio.AudioSource.blocks`: the input is then read as the
        windows need it, so memory is bounded whatever its length. ``total``: the expected
        length in samples, for ``progress(done, total)`` only (default: the array's length).
        ``guide(starts)``: gains for the windows that start at ``starts`` (model samples, (B,))
        -> (B, K, F, T) or (B, K, 1, T) in [0, 1] on the model's grid, e.g. a
        :class:`~cusep.guide.ScoreGuide` (:meth:`score_guide`): each mask is multiplied by its
        gains, and the mix floor goes to each stem in proportion to its largest gain of the
        frame, so a stem whose part rests stays silent.
        ``visual(starts)`` gives a visual model the players' crops of the windows that start at
        ``starts`` (seconds, (B,)) -> (crops (B, P, F, 3, S, S), present (B, P)).
        """
        if self.visual != (visual is not None):
            raise CusepError(f"model '{self.name}' is {'' if self.visual else 'not '}visually "
                             "conditioned: " + ("give it the video and boxes of the players"
                                                if self.visual else "it takes no video frames"))
        spec = self.model.config.spectral
        scored = self.model.config.score_input
        if scored and getattr(guide, "inputs", None) is None:
            raise CusepError(f"model '{self.name}' is score-conditioned: give it the score of "
                             "the recording (--score FILE)")
        check_rate(sample_rate)
        if isinstance(audio, (np.ndarray, torch.Tensor)):
            audio = check_signal(audio, sample_rate, spec.n_fft, spec.sample_rate)
            total = audio.shape[-1]
            audio = (audio,)
        signal = _Signal(audio, sample_rate, spec.sample_rate)
        rate = spec.sample_rate
        seg = spec.segment
        overlap = int(round(seg * self.config.overlap))
        step = seg - overlap
        ratio = sample_rate / rate
        seg_in = int(math.ceil(seg * ratio))
        weight = crossfade_window(seg_in, int(round(overlap * ratio)))
        context = torch.tensor([label_vector(codes, self.instruments)], device=self.device)
        index = torch.tensor([self.instruments.index(c) for c in codes], device=self.device)

        def window_exists(k: int) -> bool:
            """Window k (start k * step at the model rate) is needed to cover the input."""
            signal.read_to(int(round(k * step * ratio)) + seg_in, k * step + seg)
            if not signal.ended or k == 0:
                return True
            needed = max(signal.mono_length, math.ceil(signal.length * rate / sample_rate))
            return k * step < needed - overlap

        acc: np.ndarray | None = None  # (K, C, n): weighted sum of the windows from ``base`` on
        acc_w = np.zeros(0, np.float32)
        base, k = 0, 0  # absolute input position of acc[..., 0]; next window
        while window_exists(k):
            if k == 0:
                if signal.ended:
                    check_length(signal.length, sample_rate, spec.n_fft, rate)
                acc = np.zeros((len(codes) + rest, signal.channels, 0), np.float32)
            batch = []
            while len(batch) < self.config.batch_size and (not batch or window_exists(k)):
                batch.append(k * step)
                k += 1
            offsets = [int(round(s * ratio)) for s in batch]
            model_in = torch.from_numpy(np.stack([signal.mono_at(s, seg) for s in batch]))
            chunk = torch.from_numpy(np.stack([signal.input_at(o, seg_in) for o in offsets]))
            frames = visual(np.asarray(batch, np.float64) / rate) if visual is not None else None
            gate = None if guide is None else torch.from_numpy(
                np.asarray(guide(np.asarray(batch)), np.float32))
            notes = torch.from_numpy(guide.inputs(np.asarray(batch), self.instruments)) \
                if scored else None
            out = self._process(model_in, chunk, context, index, sample_rate, frames,
                                rest, gate, notes).numpy()
            for o, stems in zip(offsets, out, strict=True):
                end = o + seg_in
                if end - base > acc.shape[-1]:
                    grow = end - base - acc.shape[-1]
                    acc = np.concatenate([acc, np.zeros((*acc.shape[:2], grow), np.float32)], -1)
                    acc_w = np.concatenate([acc_w, np.zeros(grow, np.float32)])
                acc[..., o - base:end - base] += stems * weight
                acc_w[o - base:end - base] += weight
            # Nothing before the next window's start changes any more (the end: all of it).
            more = window_exists(k)
            final = int(round(k * step * ratio)) if more else signal.length
            final = min(final, signal.length) if signal.ended else final
            if final > base:
                n = final - base
                yield acc[..., :n] / acc_w[:n]
                acc, acc_w, base = acc[..., n:], acc_w[n:], final
                signal.release(final, k * step)
            if progress is not None:
                progress(final, max(total or 0, final) if more else final)
            if not more:
                break

    @torch.inference_mode()
    def _process(self, model_in: torch.Tensor, chunk: torch.Tensor, context: torch.Tensor,
                 index: torch.Tensor, sample_rate: int,
                 frames: tuple[torch.Tensor, torch.Tensor] | None = None,
                 rest: bool = False, gate: torch.Tensor | None = None,
                 notes: torch.Tensor | None = None) -> torch.Tensor:
        """model_in (B, seg) at the model rate, chunk (B, C, seg_in) at the input rate, frames
        (crops, present) for a visual model -> stems (B, K, C, seg_in) on the CPU (K + 1 with
        ``rest``: its mask is what the named masks leave, 1 - their sum, floored at 0).
        ``gate`` (B, K, F or 1, T): multiplies the K masks. ``notes`` (B, K_model, F, T): a
        score-conditioned model's harmonic combs (:meth:`cusep.guide.ScoreGuide.inputs`)."""
        spec = self.model.config.spectral
        model_in, chunk = model_in.to(self.device), chunk.to(self.device)
        bsz = model_in.shape[0]
        mag = stft(model_in, spec.n_fft, spec.hop).abs()
        inp = scale_magnitude(to_grid(mag, spec), spec.mag_scale).unsqueeze(1)
        if notes is not None:
            inp = torch.cat([inp, to_grid(notes.to(self.device), spec)], dim=1)
        ctx = context.expand(bsz, -1)
        seen = None if frames is None else (frames[0].to(self.device), frames[1].to(self.device))
        if self.device.type == "cpu":
            inp = inp.contiguous(memory_format=torch.channels_last)
        if self.dtype is not None:
            with torch.autocast(self.device.type, dtype=self.dtype):
                masks = self.model(inp, ctx, seen)
        else:
            masks = self.model(inp, ctx, seen)
        masks = from_grid(masks.float(), spec)[:, index]  # (B, K, F, T)
        if gate is not None:
            if gate.shape[:2] != masks.shape[:2] or gate.shape[2] not in (1, masks.shape[2]):
                raise CusepError(f"guide gains of shape {tuple(gate.shape)} do not fit masks "
                                 f"{tuple(masks.shape)}")
            gate = gate.to(masks.device)[..., :masks.shape[-1]]
            masks = masks * gate
        if rest:
            masks = torch.cat([masks, (1 - masks.sum(1, keepdim=True)).clamp_min(0)], 1)

        ratio = sample_rate / spec.sample_rate
        same = sample_rate == spec.sample_rate
        in_fft = spec.n_fft if same else 2 * round(spec.n_fft * ratio / 2)
        in_hop = spec.hop if same else round(spec.hop * ratio)
        if same:  # the input's STFT grid is the model's
            m = masks
        else:
            n_frames = chunk.shape[-1] // in_hop + 1  # as stft (centred) gives
            bins, frames = mask_positions(spec.sample_rate, spec.n_fft, spec.hop, sample_rate,
                                          in_fft, in_hop, n_frames)
            m = extend_and_map(masks, bins, frames)  # (B, K, Fi, Ti)
        share = None  # the floor's share of each stem: where the gate says they play
        if gate is not None:
            g = gate.amax(dim=2).float()  # (B, K, T)
            if rest:
                g = torch.cat([g, torch.ones_like(g[:, :1])], 1)
            if not same:
                g = interp_axis(g, frames, dim=-1)  # (B, K, Ti)
            total = g.sum(1, keepdim=True)
            share = torch.where(total > 0, g / total.clamp_min(1e-12),
                                torch.full_like(g, 1 / g.shape[1]))
        groups = [self._filter(m, chunk[:, g:g + CHANNEL_GROUP], in_fft, in_hop, share)
                  for g in range(0, chunk.shape[1], CHANNEL_GROUP)]
        return groups[0] if len(groups) == 1 else torch.cat(groups, dim=2)

    def _filter(self, m: torch.Tensor, chunk: torch.Tensor, in_fft: int, in_hop: int,
                share: torch.Tensor | None = None) -> torch.Tensor:
        """Masks m (B, K, Fi, Ti) on the input's grid, chunk (B, C, seg_in) -> stems
        (B, K, C, seg_in) on the CPU: EM Wiener on the channels jointly, the residual, the
        floor (split evenly, or by ``share`` (B, K, Ti), which sums to 1 over K).

        Everything stays in the iSTFT's layout (frames last): soft masks, and one channel,
        as real gains of the mixture (the residual and the floor too), so the only complex
        tensor made at full size is the one the iSTFT takes; multichannel EM in the planar
        layout of :func:`cusep.wiener.em_planar`, written out complex once at the end.
        With the residual the estimates sum to the mixture's STFT, and the iSTFT is linear
        and inverts the STFT: the last stem is the chunk minus the others (one iSTFT less).
        """
        # torch's STFT gives bins innermost: one copy to frames innermost, as everything else
        x = stft(chunk, in_fft, in_hop).contiguous()  # (B, C, Fi, Ti)
        v = m.unsqueeze(2) * x.abs().unsqueeze(1)  # (B, K, C, Fi, Ti)
        iterations, residual = self.config.wiener_iterations, self.config.residual
        floor = self.config.mix_floor if residual else 0.0
        last = -1 if residual and m.shape[1] > 1 else None  # estimates to invert: [:last]
        if iterations == 0 or x.shape[1] == 1:
            g = (wiener.softmask_gain(v) if iterations == 0 else
                 wiener.mono_gain(v[:, :, 0], wiener.power(x[:, :1]), iterations).unsqueeze(2))
            if residual:
                g = consistent_gain(g, floor, share)
            y = wiener.gain_times(g[:, :last], x.unsqueeze(1))  # (B, K or K - 1, C, Fi, Ti)
        else:
            planar = wiener.em_planar(v, x, iterations)  # (B, Fi, K, C, 2, Ti)
            if residual:
                consistent_planar_(planar, wiener.planar(x), floor, share)
            y = wiener.from_planar(planar[:, :, :last])
        stems = istft(y, chunk.shape[-1], in_fft, in_hop).float()  # (B, K or K - 1, C, seg_in)
        if last is not None:
            stems = torch.cat([stems, chunk.unsqueeze(1) - stems.sum(1, keepdim=True)], 1)
        return stems.cpu()


def stem_names(codes: Sequence[str], rest: bool) -> tuple[str, ...]:
    """The stems of a separation, in output order: the codes, then ``rest`` if asked for."""
    return (*codes, "rest") if rest else tuple(codes)


class _Signal:
    """The input as the windows read it: blocks pulled on demand, kept at the input rate and
    as a mono mix at the model rate, from the oldest sample a later window can still need.

    Positions are absolute sample indices; reads past the end give zeros.
    """

    def __init__(self, blocks: Iterable[np.ndarray], rate: int, model_rate: int) -> None:
        self._blocks = iter(blocks)
        self._resampler = StreamResampler(rate, model_rate)
        self.rate = rate
        self.channels = 0
        self._inp: list[np.ndarray] = []  # input blocks (C, n) from position _inp0
        self._mono: list[np.ndarray] = []  # model-rate mono blocks from _mono0
        self._inp0 = self._mono0 = 0
        self.length = 0  # input samples read so far (all of them once ended)
        self.mono_length = 0
        self.ended = False

    def _pull(self) -> None:
        block = next(self._blocks, None)
        if block is None:
            self._add_mono(self._resampler.flush())
            self.ended = True
            return
        b = np.asarray(block.detach().cpu() if isinstance(block, torch.Tensor) else block,
                       dtype=np.float32)
        if b.ndim != 2 or (self.channels and b.shape[0] != self.channels):
            raise CusepError(f"input blocks must be (channels, n) with one channel count; got "
                             f"{b.shape} after {self.channels} channel(s)")
        if not np.isfinite(b).all():
            raise CusepError("the audio contains NaN or infinite samples; repair or "
                             "re-export it")
        self.channels = b.shape[0]
        self._inp.append(b)
        self.length += b.shape[1]
        self._add_mono(self._resampler.push(to_mono(b)))

    def _add_mono(self, m: np.ndarray) -> None:
        if m.size:
            self._mono.append(m.astype(np.float32, copy=False))
            self.mono_length += m.shape[-1]

    def read_to(self, end: int, mono_end: int) -> None:
        """Pull blocks until the input reaches ``end`` and the mono ``mono_end`` (or the
        signal ends)."""
        while not self.ended and (self.length < end or self.mono_length < mono_end):
            self._pull()

    @staticmethod
    def _span(parts: list[np.ndarray], first: int, start: int, n: int) -> np.ndarray:
        have = np.concatenate(parts, axis=-1) if len(parts) != 1 else parts[0]
        if len(parts) > 1:
            parts[:] = [have]
        piece = have[..., start - first:start - first + n]
        missing = n - piece.shape[-1]
        return np.pad(piece, [(0, 0)] * (piece.ndim - 1) + [(0, missing)]) if missing else piece

    def input_at(self, start: int, n: int) -> np.ndarray:
        """Input samples [start, start + n) -> (C, n)."""
        return self._span(self._inp, self._inp0, start, n)

    def mono_at(self, start: int, n: int) -> np.ndarray:
        """Model-rate mono samples [start, start + n) -> (n,)."""
        return self._span(self._mono, self._mono0, start, n)

    def release(self, before: int, mono_before: int) -> None:
        """Forget input before ``before`` and mono before ``mono_before`` (never read again)."""
        for parts, attr, cut in ((self._inp, "_inp0", before), (self._mono, "_mono0",
                                                                 mono_before)):
            first = getattr(self, attr)
            if cut > first and parts:
                have = np.concatenate(parts, axis=-1)
                drop = min(cut - first, have.shape[-1])
                parts[:] = [have[..., drop:]]
                setattr(self, attr, first + drop)


def is_auto(instruments: str | Sequence[str]) -> bool:
    """True when ``instruments`` asks for detection ("auto", any case)."""
    return isinstance(instruments, str) and instruments.strip().lower() == "auto"


def separate(audio: np.ndarray | torch.Tensor, sample_rate: int,
             instruments: str | Sequence[str], model: str | Path | None = None,
             device: str = "auto", wiener_iterations: int | None = None,
             detector: str | Path | None = None, rest: bool = False) -> dict[str, np.ndarray]:
    """One-call API: audio (channels, samples) or (samples,) -> {instrument code: stem}.

    ``instruments="auto"``: the instruments the ``detector`` (default: the registry's) finds
    above its threshold; CusepError when it finds none. ``rest``: also a ``rest`` stem with
    everything the named instruments leave (for partial lists). ``wiener_iterations``: None for
    the default of :class:`SeparatorConfig`.
    """
    config = (SeparatorConfig() if wiener_iterations is None
              else SeparatorConfig(wiener_iterations=wiener_iterations))
    sep = Separator(model, device=device, config=config)
    if is_auto(instruments):
        result = Detector(detector, device=sep.device).detect(audio, sample_rate)
        if not result.detected:
            raise CusepError(f"{result.nothing_detected('the audio')}; name the instruments "
                             "instead of 'auto'")
        instruments = result.detected
    return sep.separate(audio, sample_rate, instruments, rest=rest)
