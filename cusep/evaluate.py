"""Evaluation: a model over a URMP-layout dataset -> one record per (method, piece, segment,
source).

The sources of a piece are its players, mono, summed per instrument; the mixture is the sum of
the sources (``AuMix`` files are not used). The model is conditioned on the piece's true
instruments (``pes``: on all of its instruments, so absent ones are predicted and scored).

Protocols:

- ``paper``: the mixture at the model rate (11025 Hz), cut to whole model segments (65535
  samples, consecutive, non-overlapping; the shorter tail is dropped as in the paper), separated
  with overlap 0 so every network window is exactly one segment; metrics per segment.
- ``full``: whole pieces at their own rate through the Separator with its overlap; SI-SDR and
  SD-SDR on the whole piece, BSS-eval v4 framewise (museval) aggregated over frames.

Reference methods computed by the same code: ``irm`` (ideal ratio mask |S_i| / sum_j |S_j| on the
model's STFT, mixture phase) and ``mix`` (the mixture as every estimate). Every metric comes from
:mod:`cusep.metrics`. Per-piece results are cached in ``<out>/cache/<piece>.json`` under a key of
the settings and the piece's files, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .atomic import write_text
from .audio import read_audio, resample, to_mono, write_audio
from .checkpoint import ModelDir, resolve_model
from .data.urmp import (
    LAYOUT_HINT,
    Piece,
    exclude_single_instrument,
    scan_urmp,
    score_file,
    select_split,
)
from .errors import CusepError
from .guide import PRIORS, ScoreGuide
from .instruments import BY_CODE
from .metrics import (
    Aggregation,
    aggregate_frames,
    bss_eval_framewise,
    bss_eval_sources,
    is_silent,
    pes,
    sd_sdr,
    si_sdr,
)
from .runtime import Precision, autocast_dtype, precision_name, resolve_device, tune_cpu_allocator
from .score import Score, onset_error, read_note_list, read_score
from .separate import Separator, SeparatorConfig
from .spectral import istft, stft

Protocol = Literal["paper", "full"]
PROTOCOLS: tuple[str, ...] = ("paper", "full")
ScoreMode = Literal["none", "exact", "warped", "aligned"]
SCORE_MODES: tuple[str, ...] = ("none", "exact", "warped", "aligned")
REFERENCE_METHODS: tuple[str, ...] = ("irm", "mix")
METRICS: tuple[str, ...] = ("si_sdr", "sd_sdr", "si_sdri", "pes", "sdr", "sir", "sar", "isr")
RECORD_FIELDS: tuple[str, ...] = (
    "method", "piece", "segment", "start", "length", "instrument", "present", "n_sources",
    *METRICS, "frames", "note", "align_ms", "align_confidence",
)
CACHE_VERSION = 1

Record = dict[str, Any]
Progress = Callable[["PieceOutcome", int, int], None]


@dataclass(frozen=True)
class EvalConfig:
    """How a model is evaluated (the model and the data are given separately)."""

    protocol: Protocol = "paper"
    references: tuple[str, ...] = REFERENCE_METHODS
    pes: bool = False
    """Request every instrument of the model and score the absent ones with PES."""
    wiener_iterations: int = SeparatorConfig.wiener_iterations
    mix_floor: float = SeparatorConfig.mix_floor
    rest: bool = False
    """Partial lists: every instrument of a piece is separated alone with ``--rest`` (one run
    per instrument) and its stem is scored; the reference methods are unchanged."""
    overlap: float = 0.25
    """Window overlap of the ``full`` protocol (``paper`` always uses 0)."""
    batch_size: int = 4
    precision: Precision = "auto"
    residual: bool = True
    filter_length: int = 512
    bss: bool = True
    """BSS-eval (SDR/SIR/SAR/ISR) besides SI-SDR; off for quick sweeps (it dominates the time)."""
    window: float = 1.0
    """``full``: BSS-eval window and hop in seconds."""
    frame_aggregation: Aggregation = "median"
    silence_threshold: float = 1e-5
    save_stems: bool = False
    score: ScoreMode = "none"
    """Score-informed: the masks are gated by where each instrument plays. ``exact``: the notes
    as performed (URMP's ``Notes_*.txt`` when the piece has them, else its ``Sco_*.mid``, which
    for ``cusep synth`` is the performance). ``warped``: the score unaligned - URMP's
    ``Sco_*.mid`` as printed beside its ``Notes_*.txt``, else the performance tempo-warped by
    +-``score_warp``. ``aligned``: that score aligned to the mixture (what a user with a score
    gets); its onset error is measured against the performed notes."""
    score_warp: float = 0.1
    score_prior: str = "harmonic"
    """What the score's notes do to the masks (:mod:`cusep.guide`): ``activity`` or
    ``harmonic``."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise CusepError(f"unknown protocol '{self.protocol}'; use paper or full")
        unknown = [r for r in self.references if r not in REFERENCE_METHODS]
        if unknown:
            raise CusepError(f"unknown reference method(s) {', '.join(unknown)}; "
                             f"use {', '.join(REFERENCE_METHODS)} (comma separated) or none")
        if not self.window > 0:
            raise CusepError("--window must be a positive number of seconds")
        if self.filter_length < 1:
            raise CusepError("the BSS-eval filter length must be at least 1")
        if self.score not in SCORE_MODES:
            raise CusepError(f"unknown --score '{self.score}'; use {', '.join(SCORE_MODES)}")
        if self.score_prior not in PRIORS:
            raise CusepError(f"unknown --score-prior '{self.score_prior}'; use "
                             f"{', '.join(PRIORS)}")
        if not 0.0 <= self.score_warp < 0.5:
            raise CusepError("--score-warp must be in [0, 0.5)")
        self.separator_config()  # validates iterations, overlap, batch size

    def separator_config(self) -> SeparatorConfig:
        """The Separator's settings (overlap 0 for ``paper``: one window per segment)."""
        return SeparatorConfig(
            wiener_iterations=self.wiener_iterations,
            overlap=0.0 if self.protocol == "paper" else self.overlap,
            batch_size=self.batch_size, precision=self.precision, residual=self.residual,
            mix_floor=self.mix_floor)


@dataclass(frozen=True)
class PieceOutcome:
    """What happened to one piece: ``status`` is computed, cached or skipped."""

    piece: str
    status: str
    records: tuple[Record, ...] = ()
    reason: str = ""
    seconds: float = 0.0


@dataclass
class EvalResult:
    """Every record of a run, its settings and what was skipped, computed or reused."""

    settings: dict[str, Any]
    records: list[Record]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------------- data


def select_pieces(root: str | Path, split: str | None = None
                  ) -> tuple[list[Piece], list[str]]:
    """Pieces of a URMP-layout folder to evaluate, and one note per folder left out.

    Folders scan_urmp rejects and pieces whose players all play one instrument (URMP's four) are
    left out; ``split`` keeps the pieces of that manifest split. Raises CusepError when the
    folder is not URMP-shaped or nothing is left.
    """
    root = Path(root).expanduser()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pieces = scan_urmp(root)
        except CusepError as exc:
            if not caught:
                raise
            why = "; ".join(str(w.message).replace(f"skipping {root}{os.sep}", "")
                            .replace(f" ({LAYOUT_HINT})", "") for w in caught)
            raise CusepError(f"{exc} Folders skipped: {why}") from None
    notes = [str(w.message) for w in caught]
    if split is not None:
        kept = select_split(pieces, split)
        if not kept:
            raise CusepError(f"no piece of split '{split}' in {root}; check --split "
                             "(the splits come from its manifest.json)")
        pieces = kept
    multi = exclude_single_instrument(pieces)
    notes += [f"excluding {p.name}: every player plays {p.instruments[0]} (one source)"
              for p in pieces if p not in multi]
    if not multi:
        raise CusepError(f"no piece in {root} has two or more different instruments; "
                         "nothing to separate")
    return multi, notes


def load_sources(piece: Piece, rate: int | None = None) -> tuple[np.ndarray, tuple[str, ...], int]:
    """The piece's sources: every player read, mono, resampled to ``rate`` (None: the first
    player's rate), players of one instrument summed, zero-padded to the longest.

    -> (sources float32 (K, samples), instrument codes in player order, rate).
    """
    players: list[tuple[str, np.ndarray]] = []
    for track in piece.tracks:
        audio, sr = read_audio(track.path)
        if rate is None:
            rate = sr
        players.append((track.instrument, resample(to_mono(audio), sr, rate)))
    codes = piece.instruments
    length = max(len(x) for _, x in players)
    sources = np.zeros((len(codes), length), np.float32)
    for code, x in players:
        sources[codes.index(code), :len(x)] += x
    return sources, codes, int(rate)


def ideal_ratio_mask(sources: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """IRM estimates: |S_i| / sum_j |S_j| times the mixture STFT, inverted.

    sources (..., K, samples) -> (..., K, samples). Bins where every source is zero give each
    source 1/K of the (zero) mixture, so the estimates always sum to the mixture.
    """
    s = torch.from_numpy(np.ascontiguousarray(sources, dtype=np.float32))
    spec = stft(s, n_fft, hop)  # (..., K, F, T)
    mag = spec.abs()
    total = mag.sum(-3, keepdim=True)
    mask = torch.where(total > 0, mag / total.clamp_min(1e-30),
                       torch.full_like(mag, 1.0 / s.shape[-2]))
    mix = spec.sum(-3, keepdim=True)  # the STFT is linear: the mixture's STFT
    return istft(mask * mix, s.shape[-1], n_fft, hop).numpy()


def scaled_fft(n_fft: int, hop: int, model_rate: int, rate: int) -> tuple[int, int]:
    """The model's STFT resolution (same window and hop durations) at ``rate``, as the
    Separator uses it: (n_fft, hop)."""
    if rate == model_rate:
        return n_fft, hop
    ratio = rate / model_rate
    return 2 * round(n_fft * ratio / 2), round(hop * ratio)


# -------------------------------------------------------------------------------- scoring


def _value(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _notes(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def score_segments(method: str, piece: str, codes: Sequence[str], references: np.ndarray,
                   estimates: np.ndarray, starts: Sequence[int], config: EvalConfig,
                   absent: dict[str, np.ndarray] | None = None) -> list[Record]:
    """Per-segment records (``paper``): references, estimates (S, K, L) of the present sources
    (S segments of L samples starting at ``starts``); ``absent``: {code: estimate (S, L)} scored
    with PES only. BSS-eval v3 (whole segment, estimate j vs reference j) is skipped for a
    segment where any reference or estimate is silent; SI-SDR/SD-SDR for silent references.
    """
    thr = config.silence_threshold
    mix = references.sum(-2, keepdims=True)
    si = si_sdr(estimates, references)
    sd = sd_sdr(estimates, references)
    si_mix = si_sdr(np.broadcast_to(mix, references.shape), references)
    silent = is_silent(references, thr)
    bss = bss_eval_sources(references, estimates, config.filter_length,
                           compute_permutation=False, silence_threshold=thr)
    records: list[Record] = []
    n = len(codes)
    for s, start in enumerate(starts):
        for k, code in enumerate(codes):
            quiet = bool(silent[s, k])
            records.append(_record(
                method, piece, s, start, references.shape[-1], code, True, n,
                si_sdr=None if quiet else si[s, k], sd_sdr=None if quiet else sd[s, k],
                si_sdri=None if quiet else si[s, k] - si_mix[s, k],
                sdr=bss.sdr[s, k], sir=bss.sir[s, k], sar=bss.sar[s, k],
                note=_notes("silent reference: SI-SDR and SD-SDR skipped" if quiet else "",
                            "BSS skipped: a present reference or estimate is silent in the "
                            "segment" if np.isnan(bss.sdr[s, k]) else "")))
        for code, est in (absent or {}).items():
            records.append(_record(method, piece, s, start, references.shape[-1], code, False,
                                   n, pes=pes(est[s]), note="absent instrument: PES only"))
    return records


def score_whole(method: str, piece: str, codes: Sequence[str], references: np.ndarray,
                estimates: np.ndarray, rate: int, config: EvalConfig,
                absent: dict[str, np.ndarray] | None = None) -> list[Record]:
    """Whole-piece records (``full``): references, estimates (K, samples); SI-SDR/SD-SDR on the
    whole piece, BSS-eval v4 framewise (``config.window`` seconds, hop = window) aggregated over
    the frames where no reference or estimate is silent."""
    thr = config.silence_threshold
    mix = references.sum(0)
    si = si_sdr(estimates, references)
    sd = sd_sdr(estimates, references)
    si_mix = si_sdr(np.broadcast_to(mix, references.shape), references)
    silent = is_silent(references, thr)
    length = references.shape[-1]
    bss: dict[str, Any] = {}
    if config.bss:
        window = max(1, round(config.window * rate))
        frames = bss_eval_framewise(references, estimates, window, window, config.filter_length,
                                    "v4", thr)
        agg = aggregate_frames(frames, config.frame_aggregation)
        valid = (~np.isnan(frames.sdr)).sum(-1)
    records: list[Record] = []
    for k, code in enumerate(codes):
        quiet = bool(silent[k])
        if config.bss:
            bss = {"sdr": agg.sdr[k], "sir": agg.sir[k], "sar": agg.sar[k], "isr": agg.isr[k],
                   "frames": int(valid[k])}
        records.append(_record(
            method, piece, 0, 0, length, code, True, len(codes),
            si_sdr=None if quiet else si[k], sd_sdr=None if quiet else sd[k],
            si_sdri=None if quiet else si[k] - si_mix[k], **bss,
            note=_notes("silent reference: SI-SDR and SD-SDR skipped" if quiet else "",
                        "BSS skipped: every window has a silent reference or estimate"
                        if config.bss and valid[k] == 0 else "")))
    for code, est in (absent or {}).items():
        records.append(_record(method, piece, 0, 0, length, code, False, len(codes),
                               pes=pes(est), note="absent instrument: PES only"))
    return records


def _record(method: str, piece: str, segment: int, start: int, length: int, instrument: str,
            present: bool, n_sources: int, note: str = "", frames: int | None = None,
            **metrics: Any) -> Record:
    rec: Record = {"method": method, "piece": piece, "segment": segment, "start": int(start),
                   "length": int(length), "instrument": instrument, "present": present,
                   "n_sources": n_sources}
    for name in METRICS:
        value = metrics.get(name)
        rec[name] = None if value is None else _value(value)
    rec["frames"] = frames
    rec["note"] = note
    return rec


# ------------------------------------------------------------------------------ one piece


def evaluate_piece(piece: Piece, separator: Separator, config: EvalConfig, method: str,
                   stems_dir: Path | None = None) -> list[Record]:
    """Every record of one piece: the model (named ``method``) and the reference methods.

    Raises CusepError when the piece cannot be read, is shorter than one segment (``paper``) or
    holds an instrument the model does not know.
    """
    spec = separator.model.config.spectral
    paper = config.protocol == "paper"
    sources, codes, rate = load_sources(piece, spec.sample_rate if paper else None)
    missing = [c for c in codes if c not in separator.instruments]
    if missing:
        raise CusepError(f"model '{separator.name}' cannot separate "
                         f"{', '.join(missing)}; piece skipped")
    requested = tuple(separator.instruments) if config.pes else codes
    n_fft, hop = scaled_fft(spec.n_fft, spec.hop, spec.sample_rate, rate)
    if paper:
        seg = spec.segment
        n_seg = sources.shape[-1] // seg
        if n_seg == 0:
            raise CusepError(f"{sources.shape[-1]} samples at {rate} Hz, shorter than one "
                             f"{seg}-sample segment; piece skipped")
        sources = sources[:, :n_seg * seg]
    mix = sources.sum(0)
    guide, aligned = None, {}
    if config.score != "none":
        guide, aligned = score_guide(piece, requested, mix, rate, separator, config)
    if config.rest:  # each instrument named alone, the others left in its rest stem
        stems = {c: separator.separate(mix, rate, [c], rest=True)[c] for c in requested}
    else:
        stems = separator.separate(mix, rate, requested, visual=_frames(piece, separator),
                                   guide=guide)
    if stems_dir is not None:
        for code, stem in stems.items():
            write_audio(stems_dir / piece.name / f"{code}.wav", stem[None], rate, "float32",
                        clip="none")
    model_est = np.stack([stems[c] for c in codes])
    absent = {c: stems[c] for c in requested if c not in codes}
    estimates: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {method: (model_est, absent)}
    if "irm" in config.references:
        if paper:  # per segment, like the model's windows
            cut = sources.reshape(len(codes), n_seg, seg).transpose(1, 0, 2)
            irm = ideal_ratio_mask(cut, n_fft, hop).transpose(1, 0, 2).reshape(sources.shape)
        else:
            irm = ideal_ratio_mask(sources, n_fft, hop)
        estimates["irm"] = (irm, {})
    if "mix" in config.references:
        estimates["mix"] = (np.broadcast_to(mix, sources.shape), {})
    records: list[Record] = []
    for name, (est, extra) in estimates.items():
        if paper:
            split = _segmenter(n_seg, seg)
            records += score_segments(
                name, piece.name, codes, split(sources), split(est),
                [i * seg for i in range(n_seg)], config, {c: split(x) for c, x in extra.items()})
        else:
            records += score_whole(name, piece.name, codes, sources, np.asarray(est), rate,
                                   config, extra)
    for rec in records:
        rec.update(aligned if rec["method"] == method else {})
    return records


def piece_notes(piece: Piece) -> Score | None:
    """The players' performed notes as URMP annotates them, ``Notes_<k>_<code>_*.txt`` for
    every player ``k`` (one part each, in player order; None: the piece has none)."""
    files = [sorted(piece.folder.glob(f"Notes_{t.player}_{t.instrument}_*.txt"))
             for t in piece.tracks]
    if not any(files):
        return None
    missing = [f"{t.player} ({t.instrument})" for t, f in zip(piece.tracks, files, strict=True)
               if not f]
    if missing:
        raise CusepError(f"{piece.folder} has Notes_*.txt files but none for player(s) "
                         f"{', '.join(missing)}; piece skipped")
    return Score(piece.folder, tuple(read_note_list(f[0], t.instrument)
                                    for t, f in zip(piece.tracks, files, strict=True)))


def tempo_warp(seed: int, spread: float, segment: float = 4.0) -> Callable[[np.ndarray],
                                                                           np.ndarray]:
    """A performance's time map: the tempo changes every ``segment`` s by a factor uniform in
    [1 - spread, 1 + spread] (seeded), linear in between -> seconds -> seconds."""
    factors = np.random.default_rng(seed).uniform(1 - spread, 1 + spread, 10_000)
    knots = np.concatenate([[0.0], np.cumsum(factors * segment)])
    return lambda t: np.interp(np.asarray(t) / segment, np.arange(len(knots)), knots)


def score_guide(piece: Piece, codes: Sequence[str], mix: np.ndarray, rate: int,
                separator: Separator, config: EvalConfig) -> tuple[ScoreGuide, dict[str, float]]:
    """The guide of the piece's score, as ``config.score`` says -> (guide, and with
    ``aligned`` the alignment's median onset error against the score as written, in ms, and
    its confidence)."""
    from .align import aligned_score

    path, performed = score_file(piece), piece_notes(piece)
    written = None
    if path is not None:
        try:  # URMP and cusep synth: one part per player, in player order
            written = read_score(path, [t.instrument for t in piece.tracks])
        except CusepError:  # another number of parts: their programs or names decide
            written = read_score(path)
    elif performed is None:
        raise CusepError(f"no Sco_*.mid score or Notes_*.txt in {piece.folder}; piece skipped "
                         "(render it again with this version of cusep synth)")
    truth = performed or written  # the notes as played: URMP's Notes, else what synth wrote
    # the score a user would align: URMP's Sco_*.mid as printed, else the performance warped
    unaligned = written if performed is not None and written is not None else None
    missing = [c for c in codes if c not in {p.code for p in (unaligned or truth).parts}]
    if missing:
        raise CusepError(f"{(path or piece.folder).name} has no part for "
                         f"{', '.join(missing)}; piece skipped")
    used, info = truth, {}
    if config.score in ("warped", "aligned") and unaligned is None:
        seed = int(hashlib.sha256(piece.name.encode()).hexdigest()[:8], 16)
        used = truth.warped(tempo_warp(seed, config.score_warp))
    elif config.score in ("warped", "aligned"):
        used = unaligned
    if config.score == "aligned":
        used, alignment = aligned_score(used, mix, rate)
        info = {"align_ms": onset_error(used, truth) * 1000,
                "align_confidence": alignment.confidence}
    return separator.score_guide(used, codes, config.score_prior), info


def _frames(piece: Piece, separator: Separator):
    """The frame provider of a visual model (the piece's video and boxes.json), else None."""
    visual = separator.model.config.visual
    if visual is None:
        return None
    if piece.video is None or piece.boxes is None:
        raise CusepError(f"a visual model needs the piece's Vid_*.mp4 and a boxes.json (one box "
                         f"per player, AuSep order) in {piece.folder}; piece skipped")
    from .video import frame_provider, load_boxes, video_info

    info = video_info(piece.video)
    return frame_provider(piece.video, load_boxes(piece.boxes, info.width, info.height), visual)


def _segmenter(n_seg: int, seg: int) -> Callable[[np.ndarray], np.ndarray]:
    """(..., n_seg * seg) -> (n_seg, ..., seg)."""
    return lambda x: np.moveaxis(np.asarray(x).reshape(*x.shape[:-1], n_seg, seg), -2, 0)


# ---------------------------------------------------------------------------------- a run


def piece_key(settings_key: str, piece: Piece) -> str:
    """Cache key of a piece: the run's settings key and its files' names, sizes and mtimes."""
    files = sorted([t.path for t in piece.tracks])
    stamp = [(p.name, *_stat(p)) for p in files]
    return _digest({"settings": settings_key, "files": stamp, "version": CACHE_VERSION})


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_cache(path: Path, key: str) -> list[Record] | None:
    """The records cached at ``path`` under ``key``, or None (missing, stale or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    records = data.get("records")
    return records if isinstance(records, list) else None


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then rename); NaN -> null."""
    text = json.dumps(data, indent=1, allow_nan=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
    except OSError as exc:
        raise CusepError(f"cannot write {path} ({exc.strerror or exc}); "
                         "choose a writable --out") from None


def run_settings(model: ModelDir, data: Path, dataset: str, config: EvalConfig, device: str,
                 split: str | None) -> dict[str, Any]:
    """Every setting of a run (saved in results.json); ``key`` covers those that change
    results."""
    from .version import __version__

    spec = model.model_config.spectral
    dev = resolve_device(device)
    precision = precision_name(autocast_dtype(dev, config.precision))
    paper = config.protocol == "paper"
    segment_s = spec.segment / spec.sample_rate
    if paper:
        protocol = (f"consecutive non-overlapping {spec.segment}-sample segments "
                    f"({segment_s:.2f} s) of the mono mixture at {spec.sample_rate} Hz, exactly "
                    "aligned with the model's windows (overlap 0); the tail shorter than a "
                    "segment is dropped, as in the paper; metrics per segment")
        bss = (f"bss_eval v3 sources (mir_eval bss_eval_sources), filter {config.filter_length}"
               ", each whole segment, present instruments only, estimate j scored against "
               "reference j (no permutation search)")
        window = {"samples": spec.segment, "hop": spec.segment, "seconds": segment_s}
    else:
        protocol = ("whole pieces, mono at their own sample rate, through the Separator "
                    f"(overlap {config.overlap}); nothing dropped; SI-SDR and SD-SDR on whole "
                    f"pieces, BSS-eval framewise over {config.window:g} s windows")
        bss = (f"bss_eval v4 (museval, images criteria, filters estimated once per piece), "
               f"filter {config.filter_length}, {config.window:g} s windows and hop, "
               f"{config.frame_aggregation} over the frames of each (piece, source), present "
               "instruments only")
        window = {"seconds": config.window, "hop_seconds": config.window}
    key_fields = {
        "protocol": config.protocol, "model_sha256": model.sha256,
        "references": list(config.references), "pes": config.pes,
        "wiener_iterations": config.wiener_iterations,
        "overlap": config.separator_config().overlap, "residual": config.residual,
        "mix_floor": config.mix_floor, "rest": config.rest, "bss": config.bss,
        "precision": precision, "device": dev.type, "filter_length": config.filter_length,
        "window": config.window, "frame_aggregation": config.frame_aggregation,
        "silence_threshold": config.silence_threshold, "spectral": asdict(spec),
        "score": config.score, "score_warp": config.score_warp,
        "score_prior": config.score_prior,
        "cusep_version": __version__,
    }
    return {
        "cusep_version": __version__,
        "model": {"name": model.path.name, "path": str(model.path), "sha256": model.sha256,
                  "conditioning": model.model_config.conditioning,
                  "instruments": list(model.model_config.instruments)},
        "data": {"path": str(data), "dataset": dataset, "split": split,
                 "mixture": "sum of the sources (players of one instrument summed; AuMix "
                            "files not used)",
                 "excluded": "pieces whose players all play one instrument"},
        "protocol": config.protocol,
        "protocol_description": protocol,
        "score": (None if config.score == "none" else
                  {"mode": config.score, "warp": config.score_warp,
                   "prior": config.score_prior,
                   "description": _score_description(config,
                                                     model.model_config.score_input)}),
        "conditioning": ("all the model's instruments requested (--pes): absent ones are "
                         "predicted and scored with PES") if config.pes
                        else ("each instrument named alone with a rest stem (--rest)"
                              if config.rest else "the true instruments of each piece"),
        "sample_rate": spec.sample_rate if paper else "each piece's own rate",
        "segment": spec.segment if paper else None,
        "tail_dropped": paper,
        "window": window,
        "metric_variant": {
            "si_sdr": "scale-invariant SDR, no mean removal, eps 1e-8",
            "sd_sdr": "scale-dependent SDR, no mean removal, eps 1e-8",
            "si_sdri": "SI-SDR minus the SI-SDR of the mixture as estimate",
            "pes": "10 log10(sum s_hat^2 + 1e-9) for absent instruments (--pes only)",
            "bss": bss,
            "silence": f"sum |x| <= {config.silence_threshold}: SI-SDR/SD-SDR skipped for "
                       "silent references, BSS skipped where any present reference or "
                       "estimate is silent (recorded as null with a note)",
        },
        "aggregation": ("tables: every (segment, source) value pooled over pieces, mean +- std "
                        "and median" if paper
                        else "tables: every (piece, source) value pooled, mean +- std and "
                             "median; SI-SDRi: mean over (piece, instrument) pairs"),
        "frame_aggregation": None if paper else config.frame_aggregation,
        "filter_length": config.filter_length,
        "wiener_iterations": config.wiener_iterations,
        "mix_floor": config.mix_floor,
        "rest": config.rest,
        "overlap": config.separator_config().overlap,
        "residual": config.residual,
        "precision": precision,
        "device": str(dev),
        "references": list(config.references),
        "pes": config.pes,
        "key": _digest(key_fields),
    }


def _score_description(config: EvalConfig, score_model: bool) -> str:
    """What ``--score`` did, in words, for the results' settings."""
    used = []
    if score_model:
        used.append("the notes of the piece's Sco_*.mid given to the score model")
    if config.score_prior != "none":
        used.append("masks gated by where each instrument plays in "
                    + ("it" if used else "the piece's Sco_*.mid"))
    if not used:  # a label model with --score-prior none
        used.append("the piece's Sco_*.mid read, unused by this model")
    how = {"exact": "as written",
           "warped": f"tempo-warped by +-{config.score_warp:g} and unaligned",
           "aligned": f"tempo-warped by +-{config.score_warp:g} and aligned back by cusep align"}
    return " and ".join(used) + ", " + how[config.score]


def _cache_name(piece: str) -> str:
    return f"{piece}.json"


def _stems_complete(stems_dir: Path | None, piece: Piece, codes: Iterable[str]) -> bool:
    return stems_dir is None or all((stems_dir / piece.name / f"{c}.wav").is_file()
                                    for c in codes)


def _run_piece(piece: Piece, separator: Separator, config: EvalConfig, method: str, key: str,
               cache: Path, stems_dir: Path | None) -> PieceOutcome:
    start = time.perf_counter()
    try:
        records = evaluate_piece(piece, separator, config, method, stems_dir)
    except CusepError as exc:
        return PieceOutcome(piece.name, "skipped", reason=str(exc),
                            seconds=time.perf_counter() - start)
    write_json(cache / _cache_name(piece.name), {"key": key, "piece": piece.name,
                                                  "records": records})
    return PieceOutcome(piece.name, "computed", tuple(records),
                        seconds=time.perf_counter() - start)


_WORKER: dict[str, Any] = {}  # per worker process: the Separator, loaded once


def _init_worker(model: ModelDir, device: str, config: SeparatorConfig, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["separator"] = Separator(model, device=device, config=config)
    if _WORKER["separator"].device.type == "cpu":  # a worker process: its entry point
        tune_cpu_allocator()


def _worker_piece(piece: Piece, config: EvalConfig, method: str, key: str, cache: Path,
                  stems_dir: Path | None) -> PieceOutcome:
    return _run_piece(piece, _WORKER["separator"], config, method, key, cache, stems_dir)


def evaluate(pieces: Sequence[Piece], model: str | Path | ModelDir | None, out: str | Path,
             config: EvalConfig, *, data: str | Path = "", dataset: str = "urmp",
             split: str | None = None, device: str = "auto", jobs: int = 1,
             progress: Progress | None = None) -> EvalResult:
    """Evaluate ``model`` (and the reference methods) on ``pieces``; cache per piece under
    ``out/cache``. ``progress(outcome, done, total)`` is called after every piece.

    Pieces holding an instrument the model lacks, and pieces that cannot be read, are skipped
    and listed in ``EvalResult.skipped``.
    """
    if jobs < 1:
        raise CusepError("--jobs must be at least 1")
    begin = time.perf_counter()
    mdir = resolve_model(model)  # the weights are hashed here, once (a ModelDir: not again)
    settings = run_settings(mdir, Path(data), dataset, config, device, split)
    method = settings["model"]["name"]
    if method in REFERENCE_METHODS:
        raise CusepError(f"the model directory is named '{method}', like a reference method; "
                         "rename it")
    out = Path(out)
    cache = out / "cache"
    stems_dir = out / "stems" if config.save_stems else None
    instruments = tuple(mdir.model_config.instruments)
    requested = instruments if config.pes else None
    result = EvalResult(settings, [])
    todo: list[tuple[Piece, str]] = []
    outcomes: dict[str, PieceOutcome] = {}
    total = len(pieces)

    def done(outcome: PieceOutcome) -> None:
        outcomes[outcome.piece] = outcome
        if progress is not None:
            progress(outcome, len(outcomes), total)

    for piece in pieces:
        missing = [c for c in piece.instruments if c not in instruments]
        if missing:
            names = ", ".join(f"{c} ({BY_CODE[c].name})" for c in missing)
            done(PieceOutcome(piece.name, "skipped",
                              reason=f"model '{method}' cannot separate {names}"))
            continue
        key = piece_key(settings["key"], piece)
        cached = read_cache(cache / _cache_name(piece.name), key)
        if cached is not None and _stems_complete(stems_dir, piece,
                                                  requested or piece.instruments):
            done(PieceOutcome(piece.name, "cached", tuple(cached)))
            continue
        todo.append((piece, key))

    if todo:
        sep_config = config.separator_config()
        if jobs == 1 or len(todo) == 1:
            separator = Separator(mdir, device=device, config=sep_config)
            for piece, key in todo:
                done(_run_piece(piece, separator, config, method, key, cache, stems_dir))
        else:
            workers = min(jobs, len(todo))
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                     initializer=_init_worker,
                                     initargs=(mdir, device, sep_config, threads)
                                     ) as pool:
                futures = [pool.submit(_worker_piece, piece, config, method, key, cache,
                                       stems_dir) for piece, key in todo]
                for future in as_completed(futures):
                    done(future.result())

    for piece in pieces:  # records in piece order, whatever the order of completion
        outcome = outcomes[piece.name]
        if outcome.status == "skipped":
            result.skipped.append((piece.name, outcome.reason))
            continue
        (result.computed if outcome.status == "computed" else result.cached).append(piece.name)
        result.records.extend(outcome.records)
    result.seconds = time.perf_counter() - begin
    return result
