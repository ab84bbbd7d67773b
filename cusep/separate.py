"""The Separator: one signal in, one stem per requested instrument out.

The flow per window (overlapping windows of one model segment, triangular cross-fade):
mono mixture at the model rate -> STFT features -> ConditionedUNet masks -> masks mapped onto the
input's own STFT grid (full band: the top band's mask is extended above the model's Nyquist) ->
EM Wiener filter on every input channel -> mixture-consistent residual -> iSTFT at the input rate.
Windows are batched through the network and the filter; the output is produced in order, block by
block, so memory stays bounded whatever the length.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from . import wiener
from .audio import resample, to_mono
from .checkpoint import ModelDir, load_model
from .errors import CusepError
from .instruments import BY_CODE, label_vector, parse_instruments
from .model import ConditionedUNet
from .spectral import from_grid, interp_axis, istft, scale_magnitude, stft, to_grid
from .visual import FrameProvider

Precision = Literal["auto", "fp32", "bf16", "fp16"]
CHANNEL_GROUP = 8  # channels filtered jointly; more are filtered in groups (bounded memory)
MIN_RATE, MAX_RATE = 1000, 768000  # the input sample rates cusep takes
MAX_WIENER_ITERATIONS = 20  # each costs a full EM pass; more than a few never helped
Progress = Callable[[int, int], None]


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> first CUDA device if any, else CPU; validates 'cuda[:i]'."""
    if isinstance(device, torch.device):
        return device
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CusepError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CusepError(
                f"device '{device}' asked for but CUDA is not available; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CusepError(
                f"device '{device}' does not exist; "
                f"{torch.cuda.device_count()} CUDA device(s) found"
            )
    elif dev.type != "cpu":
        raise CusepError(f"unsupported device '{device}'; use auto, cpu, cuda or cuda:N")
    return dev


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True on CPUs with native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    cpu = getattr(torch._C, "_cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    if any(bool(getattr(cpu, name, lambda: False)()) for name in checks):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def tune_cpu_allocator() -> None:
    """Keep glibc malloc from returning large buffers to the OS after every pass (ENV.md)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def autocast_dtype(device: torch.device, precision: Precision) -> torch.dtype | None:
    """The autocast dtype for the network, or None for plain float32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else None


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
    """
    f = masks.shape[-2]
    top = masks[..., f - f // 4:, :].mean(dim=-2, keepdim=True)
    extended = torch.cat([masks, top], dim=-2)
    out = _map_axis(extended, bins.clamp(max=f), dim=-2)
    return _map_axis(out, frames, dim=-1)


def _shares(power: torch.Tensor, dim: int) -> torch.Tensor:
    """Energy shares power / sum(power) along ``dim``, 1 / K where the sum is 0; in place."""
    total = power.sum(dim, keepdim=True)
    shares = power.div_(total.clamp_min(1e-30))
    return shares.masked_fill_(total <= 0, 1 / power.shape[dim])


def consistent_gain(gain: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """The mixture-consistent residual and the mix floor for estimates y = g x (real gains).

    Each estimate gets its energy share |y_k|^2 / sum |y|^2 of the residual x - sum_k y_k,
    so the estimates sum to the mixture, then leans towards it:
    (1 - floor) y_k + floor / K x. With y = g x both stay a real gain of x.
    gain real (N, K, {1, C}, F, T) -> real (N, K, {1, C}, F, T) (the input is not modified).
    """
    k = gain.shape[1]
    left = (1 - gain.sum(1, keepdim=True)).mul_(1 - floor)  # of the residual, floored
    out = _shares(gain.square(), 1).mul_(left)
    out.add_(gain, alpha=1 - floor)
    return out.add_(floor / k) if floor > 0 else out


def consistent_planar_(estimates: torch.Tensor, mix: torch.Tensor, floor: float = 0.0
                       ) -> torch.Tensor:
    """:func:`consistent_gain` for any estimates, in place, in the planar layout of
    :func:`cusep.wiener.em_planar`.

    estimates real (N, F, K, C, 2, T) (dim 4: real, imaginary), mix real (N, F, C, 2, T) ->
    the estimates, modified.
    """
    k = estimates.shape[2]
    residual = mix - estimates.sum(2)  # (N, F, C, 2, T)
    re, im = estimates.select(4, 0), estimates.select(4, 1)
    shares = _shares(re.square().addcmul_(im, im), 2)  # (N, F, K, C, T)
    estimates.addcmul_(residual.unsqueeze(2), shares.unsqueeze(4))
    if floor > 0:
        estimates.mul_(1 - floor).add_(mix.unsqueeze(2), alpha=floor / k)
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

    def __init__(self, model: str | Path | ConditionedUNet | None = None,
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
            tune_cpu_allocator()
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
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

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

    @property
    def visual(self) -> bool:
        """True for a visually conditioned model (it needs a frame provider)."""
        return self.model.config.visual is not None

    def separate(self, audio: np.ndarray | torch.Tensor, sample_rate: int,
                 instruments: str | Sequence[str], progress: Progress | None = None,
                 visual: FrameProvider | None = None, rest: bool = False
                 ) -> dict[str, np.ndarray]:
        """audio (channels, samples) or (samples,) -> {code: stem with the input's shape}.

        ``visual``: for a visual model, the crops of the players for each window
        (:func:`cusep.visual.frame_provider`); label models take the instruments' labels.
        ``rest``: the instruments are only some of those that play; a further stem ``rest``
        holds everything else (the stems still sum to the input).
        """
        codes = self.check_instruments(instruments)
        arr = np.asarray(audio.detach().cpu() if isinstance(audio, torch.Tensor) else audio)
        mono_input = arr.ndim == 1
        blocks = list(self.iter_blocks(arr, sample_rate, codes, progress, visual, rest))
        stems = np.concatenate(blocks, axis=-1)
        names = stem_names(codes, rest)
        return {c: (stems[i, 0] if mono_input else stems[i]) for i, c in enumerate(names)}

    def iter_blocks(self, audio: np.ndarray, sample_rate: int, codes: Sequence[str],
                    progress: Progress | None = None, visual: FrameProvider | None = None,
                    rest: bool = False) -> Iterator[np.ndarray]:
        """Yield consecutive output blocks (K, channels, n) covering the input exactly (K: the
        codes, and one more for ``rest``, last; see :func:`stem_names`).

        ``visual(starts)`` gives a visual model the players' crops of the windows that start at
        ``starts`` (seconds, (B,)) -> (crops (B, P, F, 3, S, S), present (B, P)).
        """
        if self.visual != (visual is not None):
            raise CusepError(f"model '{self.name}' is {'' if self.visual else 'not '}visually "
                             "conditioned: " + ("give it the video and boxes of the players"
                                                if self.visual else "it takes no video frames"))
        spec = self.model.config.spectral
        audio = _check_signal(audio, sample_rate, spec.n_fft, spec.sample_rate)
        channels, total = audio.shape
        rate = spec.sample_rate
        mono = resample(to_mono(audio), sample_rate, rate).astype(np.float32)
        seg = spec.segment
        overlap = int(round(seg * self.config.overlap))
        step = seg - overlap
        needed = max(len(mono), math.ceil(total * rate / sample_rate))  # cover every sample
        starts = list(range(0, max(needed - overlap, 1), step))
        ratio = sample_rate / rate
        seg_in = int(math.ceil(seg * ratio))
        overlap_in = int(round(overlap * ratio))
        weight = crossfade_window(seg_in, overlap_in)
        padded_len = int(round(starts[-1] * ratio)) + seg_in
        mono = np.pad(mono, (0, max(0, starts[-1] + seg - len(mono))))
        audio = np.pad(audio, ((0, 0), (0, max(0, padded_len - total))))
        context = torch.tensor([label_vector(codes, self.instruments)], device=self.device)
        index = torch.tensor([self.instruments.index(c) for c in codes], device=self.device)

        acc = np.zeros((len(codes) + rest, channels, 0), np.float32)
        acc_w = np.zeros(0, np.float32)
        base = 0  # absolute input position of acc[..., 0]
        for b0 in range(0, len(starts), self.config.batch_size):
            batch = starts[b0:b0 + self.config.batch_size]
            offsets = [int(round(s * ratio)) for s in batch]
            model_in = torch.from_numpy(np.stack([mono[s:s + seg] for s in batch]))
            chunk = torch.from_numpy(np.stack([audio[:, o:o + seg_in] for o in offsets]))
            frames = visual(np.asarray(batch, np.float64) / rate) if visual is not None else None
            out = self._process(model_in, chunk, context, index, sample_rate, frames,
                                rest).numpy()
            for o, stems in zip(offsets, out, strict=True):
                end = o + seg_in
                if end - base > acc.shape[-1]:
                    grow = end - base - acc.shape[-1]
                    acc = np.concatenate([acc, np.zeros((*acc.shape[:2], grow), np.float32)], -1)
                    acc_w = np.concatenate([acc_w, np.zeros(grow, np.float32)])
                acc[..., o - base:end - base] += stems * weight
                acc_w[o - base:end - base] += weight
            nxt = b0 + self.config.batch_size
            final = min(total, int(round(starts[nxt] * ratio)) if nxt < len(starts) else total)
            if final > base:
                n = final - base
                yield acc[..., :n] / acc_w[:n]
                acc, acc_w, base = acc[..., n:], acc_w[n:], final
            if progress is not None:
                progress(final, total)

    @torch.inference_mode()
    def _process(self, model_in: torch.Tensor, chunk: torch.Tensor, context: torch.Tensor,
                 index: torch.Tensor, sample_rate: int,
                 frames: tuple[torch.Tensor, torch.Tensor] | None = None,
                 rest: bool = False) -> torch.Tensor:
        """model_in (B, seg) at the model rate, chunk (B, C, seg_in) at the input rate, frames
        (crops, present) for a visual model -> stems (B, K, C, seg_in) on the CPU (K + 1 with
        ``rest``: its mask is what the named masks leave, 1 - their sum, floored at 0)."""
        spec = self.model.config.spectral
        model_in, chunk = model_in.to(self.device), chunk.to(self.device)
        bsz = model_in.shape[0]
        mag = stft(model_in, spec.n_fft, spec.hop).abs()
        inp = scale_magnitude(to_grid(mag, spec), spec.mag_scale).unsqueeze(1)
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
        groups = [self._filter(m, chunk[:, g:g + CHANNEL_GROUP], in_fft, in_hop)
                  for g in range(0, chunk.shape[1], CHANNEL_GROUP)]
        return groups[0] if len(groups) == 1 else torch.cat(groups, dim=2)

    def _filter(self, m: torch.Tensor, chunk: torch.Tensor, in_fft: int, in_hop: int
                ) -> torch.Tensor:
        """Masks m (B, K, Fi, Ti) on the input's grid, chunk (B, C, seg_in) -> stems
        (B, K, C, seg_in) on the CPU: EM Wiener on the channels jointly, the residual, the
        floor.

        Everything stays in the iSTFT's layout (frames last): soft masks, and one channel,
        as real gains of the mixture (the residual and the floor too), so the only complex
        tensor made at full size is the one the iSTFT takes; multichannel EM in the planar
        layout of :func:`cusep.wiener.em_planar`, written out complex once at the end.
        """
        # torch's STFT gives bins innermost: one copy to frames innermost, as everything else
        x = stft(chunk, in_fft, in_hop).contiguous()  # (B, C, Fi, Ti)
        v = m.unsqueeze(2) * x.abs().unsqueeze(1)  # (B, K, C, Fi, Ti)
        iterations, residual = self.config.wiener_iterations, self.config.residual
        floor = self.config.mix_floor if residual else 0.0
        if iterations == 0 or x.shape[1] == 1:
            g = (wiener.softmask_gain(v) if iterations == 0 else
                 wiener.mono_gain(v[:, :, 0], wiener.power(x[:, :1]), iterations).unsqueeze(2))
            if residual:
                g = consistent_gain(g, floor)
            y = wiener.gain_times(g, x.unsqueeze(1))  # (B, K, C, Fi, Ti)
        else:
            planar = wiener.em_planar(v, x, iterations)  # (B, Fi, K, C, 2, Ti)
            if residual:
                consistent_planar_(planar, wiener.planar(x), floor)
            y = wiener.from_planar(planar)
        return istft(y, chunk.shape[-1], in_fft, in_hop).float().cpu()


def stem_names(codes: Sequence[str], rest: bool) -> tuple[str, ...]:
    """The stems of a separation, in output order: the codes, then ``rest`` if asked for."""
    return (*codes, "rest") if rest else tuple(codes)


def _check_signal(audio: np.ndarray, sample_rate: int, n_fft: int, model_rate: int) -> np.ndarray:
    """Validate and normalise the input to float32 (channels, samples)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise CusepError(f"audio must be (channels, samples) or (samples,), got shape {a.shape}")
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise CusepError(f"sample rate {sample_rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz; "
                         "resample the recording (or fix its header)")
    if a.shape[-1] == 0:
        raise CusepError("the audio is empty (zero samples); give a recording with sound")
    if a.shape[0] > a.shape[1] and a.shape[1] <= 8:
        raise CusepError(f"audio of shape {a.shape} looks like (samples, channels); cusep takes "
                         "(channels, samples): pass audio.T")
    min_len = int(math.ceil(n_fft * sample_rate / model_rate))
    if a.shape[-1] < min_len:
        raise CusepError(
            f"the audio is too short ({a.shape[-1]} samples at {sample_rate} Hz); "
            f"cusep needs at least {min_len} samples "
            f"(one STFT frame, {n_fft / model_rate * 1000:.0f} ms)"
        )
    if not np.isfinite(a).all():
        raise CusepError("the audio contains NaN or infinite samples; repair or re-export it")
    return a


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
        from .detect import Detector  # detect imports this module

        result = Detector(detector, device=sep.device).detect(audio, sample_rate)
        if not result.detected:
            raise CusepError(f"{result.nothing_detected('the audio')}; name the instruments "
                             "instead of 'auto'")
        instruments = result.detected
    return sep.separate(audio, sample_rate, instruments, rest=rest)
