"""Render multitrack chamber music from the music21 corpus with FluidSynth (``cusep synth``).

Pipeline: corpus works (:mod:`cusep.data.scores`) -> excerpts -> a plan that gives each excerpt
players and instruments (balanced across the set) -> one humanised MIDI file per player ->
``fluidsynth`` -> mono stems at ``sample_rate`` -> URMP layout on disk::

    OUT/0007_bwv269_vn_va_vc_db/AuMix_0007_bwv269_vn_va_vc_db.wav
    OUT/0007_bwv269_vn_va_vc_db/AuSep_1_vn_0007_bwv269.wav   (one per player)
    OUT/0007_bwv269_vn_va_vc_db/Vid_0007_bwv269_vn_va_vc_db.mp4, boxes.json   (with video)
    OUT/manifest.json, OUT/README.md

Stems are 16-bit and the mix is the exact sum of the stored stems. Output is byte-identical for
the same :class:`SynthConfig`; pieces are rendered into a temporary folder and renamed into
place, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import replace_dir, sync, write_text
from ..errors import CusepError
from ..instruments import BY_CODE, CODES, parse_instruments
from ..score import Score, ScoreNote, ScorePart, write_midi
from .recording import RecordingConfig, apply_recording
from .sampler import BANK_RATE, bank_summary, check_bank, render_part, resolve_bank
from .scores import (
    DEFAULT_QPM,
    DEFAULT_SOURCES,
    SOURCES,
    SPLITS,
    Note,
    Work,
    default_cache_dir,
    list_works,
    load_work,
    require_music21,
    split_of,
    work_title,
)

INSTALL_COMMAND = "apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont"

#: Font name -> (candidate files, Debian package).
FONTS: dict[str, tuple[tuple[str, ...], str]] = {
    "fluidr3": (("/usr/share/sounds/sf2/FluidR3_GM.sf2",), "fluid-soundfont-gm"),
    "fluidr3mono": (("/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",), "fluidr3mono-gm-soundfont"),
    "musescore": (
        (
            "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
            "/usr/share/sounds/sf3/MuseScore_General_HQ.sf3",
            "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
            "/usr/share/sounds/sf2/MuseScore_General_Full.sf2",
            "/usr/share/sounds/sf2/MuseScore_General.sf2",
            "/usr/share/sounds/sf3/MuseScore_General.sf3",
        ),
        "musescore-general-soundfont",
    ),
    "timgm6mb": (("/usr/share/sounds/sf2/TimGM6mb.sf2",), "timgm6mb-soundfont"),
}

RENDER_RATE = 44100
TICKS_PER_SECOND = 960  # 480 ticks per beat at 120 bpm
MANIFEST = "manifest.json"
CARD = "README.md"
CONFIG_FILE = "synth_config.json"
PIECE_META = "synth.json"
_TMP_PREFIX = ".tmp-"
_PEAK = 0.8  # the mix of every piece is scaled to this peak
_RUN_FIELDS = ("jobs", "resume", "force")  # options that do not change the output


@dataclass(frozen=True)
class SynthConfig:
    """All options of ``cusep synth``.

    ``fonts`` are names of :data:`FONTS`, paths to .sf2/.sf3 files, or sample banks of real
    recorded notes (``samples`` = ``$CUSEP_SAMPLES``, or a folder with a manifest.json, played
    by :mod:`.sampler`), used in turn per piece.
    ``reverb`` is the probability that a piece gets (identical per stem) reverb.
    ``max_pieces`` (0: no limit) stops the set early, whatever ``minutes_per_instrument`` says.
    ``video`` also renders ``Vid_<piece>.mp4`` + ``boxes.json`` per piece (:mod:`.synth_video`).
    ``timbre_shift`` (semitones, 0: off) varies every player's timbre: its part is rendered ``s``
    semitones higher (``s`` uniform in -N..N per player) and ``2**(s/12)`` times faster, then
    resampled back to its true pitch and timing. The font then plays each note from other
    samples (other key zones, each moved by its own resampling), with stretched envelopes and
    vibrato; a font with one sample per instrument sounds almost unchanged.
    ``mic_eq_db``, ``room``, ``noise_db``, ``level_db``: recording effects per player
    (:class:`~cusep.data.recording.RecordingConfig`; all 0: off, and the render is unchanged).
    """

    split: str = "train"
    fonts: tuple[str, ...] = ("fluidr3",)
    instruments: tuple[str, ...] = CODES
    min_players: int = 2
    max_players: int = 4
    minutes_per_instrument: float = 10.0
    sample_rate: int = 11025
    seed: int = 0
    excerpt_seconds: float = 30.0
    reverb: float = 0.0
    humanise: bool = True
    distinct: bool = True
    sources: tuple[str, ...] = DEFAULT_SOURCES
    max_pieces: int = 0
    video: bool = False
    timbre_shift: int = 0
    mic_eq_db: float = 0.0
    room: float = 0.0
    noise_db: float = 0.0
    level_db: float = 0.0
    jobs: int = 1
    resume: bool = False
    force: bool = False


@dataclass(frozen=True)
class PlayerPlan:
    """One player of a planned piece: a corpus part rendered as instrument ``code``."""

    part: int
    part_name: str
    code: str
    shift: int


@dataclass(frozen=True)
class PiecePlan:
    """One piece to render: an excerpt (quarter notes ``start``..``end``) of ``work``."""

    index: int
    name: str
    work: str
    excerpt: int
    start: float
    end: float
    qpm: float
    players: tuple[PlayerPlan, ...]
    font: str
    seed: int


# --------------------------------------------------------------------------- requirements


def resolve_font(spec: str) -> Path:
    """The file of a font name (fluidr3, fluidr3mono, musescore, timgm6mb) or .sf2/.sf3 path,
    or the folder of a sample bank (``samples`` or a folder with a manifest.json)."""
    bank = resolve_bank(spec)
    if bank is not None:
        return bank
    key = spec.strip().lower()
    if key in FONTS:
        candidates, package = FONTS[key]
        for c in candidates:
            p = Path(c)
            if p.is_file() and (key != "musescore" or "musescore" in p.resolve().name.lower()):
                return p
        command = (INSTALL_COMMAND if key in ("fluidr3", "timgm6mb")
                   else f"apt-get install {package}")
        raise CusepError(f"SoundFont '{key}' not found at {candidates[0]}; install it: {command}")
    p = Path(spec).expanduser()
    if p.suffix.lower() in (".sf2", ".sf3"):
        if not p.is_file():
            raise CusepError(f"SoundFont file {p} does not exist; give an existing .sf2/.sf3 file.")
        return p
    raise CusepError(
        f"unknown SoundFont '{spec}'; use one of {', '.join(FONTS)}, samples, a path to a "
        ".sf2/.sf3 file or a sample-bank folder."
    )


def check_requirements(fonts: Sequence[str]) -> dict[str, Path]:
    """Check fluidsynth (for SoundFonts), music21 and the fonts; return font name -> file (a
    sample bank: its folder). Raises CusepError."""
    if not fonts:
        raise CusepError(f"no SoundFont given; use one of {', '.join(FONTS)} or samples.")
    resolved = {f: resolve_font(f) for f in fonts}
    if any(not p.is_dir() for p in resolved.values()) and shutil.which("fluidsynth") is None:
        raise CusepError(f"fluidsynth is not installed; install it: {INSTALL_COMMAND}")
    require_music21()
    return resolved


def _font_label(spec: str) -> str:
    key = spec.strip().lower()
    return key if key in FONTS or key == "samples" else Path(spec).name


# --------------------------------------------------------------------------- planning


def _validate(config: SynthConfig) -> SynthConfig:
    if config.split not in SPLITS:
        raise CusepError(f"unknown split '{config.split}'; use one of {', '.join(SPLITS)}.")
    instruments = parse_instruments(config.instruments)
    if not 1 <= config.min_players <= config.max_players <= 7:
        raise CusepError(
            f"players must satisfy 1 <= min ({config.min_players}) <= max "
            f"({config.max_players}) <= 7."
        )
    if config.distinct and config.min_players > len(instruments):
        raise CusepError(
            f"{config.min_players} players need as many distinct instruments but only "
            f"{len(instruments)} are allowed; add instruments or lower --min-players."
        )
    if not 1000 <= config.sample_rate <= 96000:
        raise CusepError(f"sample rate {config.sample_rate} is outside 1000..96000 Hz.")
    if config.excerpt_seconds < 2:
        raise CusepError("--excerpt-seconds must be at least 2.")
    if config.minutes_per_instrument <= 0 and config.max_pieces <= 0:
        raise CusepError("--minutes-per-instrument must be positive.")
    if not 0 <= config.reverb <= 1:
        raise CusepError("--reverb is a probability per piece: give a value in 0..1.")
    if config.jobs < 1:
        raise CusepError("--jobs must be at least 1.")
    if not 0 <= config.timbre_shift <= 12:
        raise CusepError("--timbre-shift is a number of semitones: give a value in 0..12.")
    if not 0 <= config.room <= 1:
        raise CusepError("--room is a probability per piece: give a value in 0..1.")
    for name, value, top in (("--mic-eq", config.mic_eq_db, 24), ("--noise-floor",
                             config.noise_db, 120), ("--level-spread", config.level_db, 24)):
        if not 0 <= value <= top:
            raise CusepError(f"{name} is in dB: give a value in 0..{top} (0: off).")
    unknown = [s for s in config.sources if s not in SOURCES]
    if unknown or not config.sources:
        raise CusepError(f"unknown source '{unknown[0] if unknown else ''}'; "
                         f"choose from {', '.join(SOURCES)}.")
    return replace(config, instruments=instruments, fonts=tuple(config.fonts),
                   sources=tuple(config.sources))


def _base_tempo(work: Work) -> list[tuple[float, float]]:
    """Tempo segments (start quarter, qpm) of a work; the source's default when unmarked."""
    if not work.tempos:
        return [(0.0, DEFAULT_QPM.get(work.source, 100.0))]
    segs = [(0.0, work.tempos[0][1])] if work.tempos[0][0] > 0 else []
    return segs + [(float(a), float(b)) for a, b in work.tempos]


def _seconds_at(segs: list[tuple[float, float]], q: float) -> float:
    t = 0.0
    for i, (start, qpm) in enumerate(segs):
        stop = segs[i + 1][0] if i + 1 < len(segs) else math.inf
        if q <= start:
            break
        t += (min(q, stop) - start) * 60.0 / qpm
    return t


def _excerpts(work: Work, seconds: float) -> list[tuple[float, float]]:
    """Cut a work into consecutive windows of about ``seconds`` (quarter-note bounds)."""
    onsets = sorted({n.onset for p in work.parts for n in p.notes})
    if not onsets or work.length <= 0:
        return []
    segs = _base_tempo(work)
    total = _seconds_at(segs, work.length)
    if total < 2.0:
        return []
    n = max(1, int(total / seconds + 0.5))
    grid = np.asarray(onsets)
    times = np.asarray([_seconds_at(segs, q) for q in onsets])
    bounds = [onsets[0]]
    for k in range(1, n):
        q = float(grid[int(np.argmin(np.abs(times - k * total / n)))])
        if q > bounds[-1]:
            bounds.append(q)
    bounds.append(work.length)
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _window(notes: Sequence[Note], start: float, end: float) -> list[Note]:
    out = []
    for n in notes:
        if start <= n.onset < end:
            out.append(Note(n.onset, min(n.length, end - n.onset), n.pitches))
    return out


def _keep(pitches: tuple[int, ...], code: str) -> tuple[int, ...]:
    """Strings keep the top two notes of a chord, winds and brass the top note."""
    return pitches[:2] if BY_CODE[code].family == "strings" else pitches[:1]


def _fit_shift(notes: Sequence[Note], code: str) -> int | None:
    """Smallest whole-octave shift (up to 2 octaves) that puts the notes in range, or None."""
    inst = BY_CODE[code]
    kept = [p for n in notes for p in _keep(n.pitches, code)]
    lo, hi = min(kept), max(kept)
    centre = (inst.low + inst.high) / 2
    best = None
    for shift in (0, -12, 12, -24, 24):
        if inst.low <= lo + shift and hi + shift <= inst.high:
            score = (abs(shift), abs((lo + hi) / 2 + shift - centre))
            if best is None or score < best[0]:
                best = (score, shift)
    return None if best is None else best[1]


def _active(notes: Sequence[Note], start: float, end: float) -> bool:
    sounding = sum(n.length for n in notes)
    return len(notes) >= 2 and sounding >= 0.25 * (end - start)


def _iter_works(paths: Sequence[str], cache_dir: Path | None, jobs: int,
                on_parsed=None) -> Iterator[Work]:
    """Parsed works in the order of ``paths``; parses ahead in ``jobs`` processes."""
    if jobs <= 1:
        for p in paths:
            w = load_work(p, cache_dir)
            if on_parsed:
                on_parsed()
            yield w
        return
    with ProcessPoolExecutor(jobs) as pool:
        pending: list[Future] = []
        it = iter(paths)
        for p in it:
            pending.append(pool.submit(load_work, p, cache_dir))
            if len(pending) >= 16 * jobs:
                break
        while pending:
            w = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load_work, nxt, cache_dir))
            if on_parsed:
                on_parsed()
            yield w


def plan_pieces(config: SynthConfig, cache_dir: Path | None = None,
                on_parsed=None) -> tuple[list[PiecePlan], dict[str, Work]]:
    """Choose excerpts, players and instruments of every piece (deterministic in the config).

    Works are visited in a seeded order, one excerpt per work per round; each piece takes
    a random number of active parts and gives them the least-covered instruments that fit
    their range (whole-octave shifts), until every instrument has its minutes.
    """
    config = _validate(config)
    paths = [p for p in list_works(config.sources) if split_of(p) == config.split]
    if not paths:
        raise CusepError(f"no work of {', '.join(config.sources)} falls in split {config.split}.")
    rng = np.random.default_rng([config.seed, 7])
    order = [paths[i] for i in rng.permutation(len(paths))]
    target = config.minutes_per_instrument * 60.0 if config.minutes_per_instrument > 0 else math.inf
    cover = {c: 0.0 for c in config.instruments}
    rank = {c: i for i, c in enumerate(config.instruments)}
    plans: list[PiecePlan] = []
    works: dict[str, Work] = {}
    queues: dict[str, list[tuple[int, float, float]]] = {}

    def done() -> bool:
        full = all(v >= target for v in cover.values())
        return full or (config.max_pieces > 0 and len(plans) >= config.max_pieces)

    def try_excerpt(work: Work, excerpt: int, start: float, end: float) -> None:
        parts = [(i, _window(p.notes, start, end)) for i, p in enumerate(work.parts)]
        parts = [(i, ns) for i, ns in parts if _active(ns, start, end)]
        if len(parts) < config.min_players:
            return
        k = int(rng.integers(config.min_players, min(config.max_players, len(parts)) + 1))
        chosen = sorted(rng.choice(len(parts), size=k, replace=False).tolist())
        draws = rng.random(len(rank))
        tiebreak = {c: float(u) for c, u in zip(config.instruments, draws, strict=True)}
        fits = {
            i: {c: s for c in config.instruments if (s := _fit_shift(ns, c)) is not None}
            for i, ns in (parts[j] for j in chosen)
        }
        used: Counter[str] = Counter()
        assigned: dict[int, tuple[str, int]] = {}
        segs = _base_tempo(work)
        seconds = _seconds_at(segs, end) - _seconds_at(segs, start)
        for i in sorted(fits, key=lambda i: (len(fits[i]), i)):
            options = [c for c in fits[i] if not (config.distinct and c in used)]
            if not options:
                continue
            # with repeats allowed, an instrument already in the piece counts as covered by it,
            # so players share an instrument only when the others are fuller or out of range
            code = min(options, key=lambda c: (cover[c] + used[c] * seconds >= target,
                                               abs(fits[i][c]) > 12,
                                               cover[c] + used[c] * seconds, tiebreak[c]))
            used[code] += 1
            assigned[i] = (code, fits[i][code])
        if len(assigned) < config.min_players:
            return
        if all(cover[c] >= target for c, _ in assigned.values()):
            return
        for code, _ in assigned.values():
            cover[code] += seconds
        qpm = next(b for a, b in reversed(segs) if a <= start) if segs else 100.0
        index = len(plans) + 1
        players = tuple(
            PlayerPlan(i, work.parts[i].name, code, shift)
            for i, (code, shift) in sorted(assigned.items())
        )
        title = work_title(work.path)
        name = f"{index:04d}_{title}_{'_'.join(p.code for p in players)}"
        font = config.fonts[(index - 1) % len(config.fonts)]
        seed = int(np.random.SeedSequence([config.seed, index]).generate_state(1)[0])
        plans.append(PiecePlan(index, name, work.path, excerpt, start, end, qpm, players,
                               font, seed))

    for work in _iter_works(order, cache_dir, config.jobs, on_parsed):
        if done():
            break
        works[work.path] = work
        cuts = _excerpts(work, config.excerpt_seconds)
        queue = [(int(j), *cuts[j]) for j in rng.permutation(len(cuts))]
        queues[work.path] = queue
        if queue:
            try_excerpt(work, *queue.pop(0))
    while not done() and any(queues.values()):
        for path in order:
            if done():
                break
            if queues.get(path):
                try_excerpt(works[path], *queues[path].pop(0))
    used_works = {p.work for p in plans}
    return plans, {k: v for k, v in works.items() if k in used_works}


# --------------------------------------------------------------------------- MIDI


@dataclass(frozen=True)
class Humanisation:
    """Per-piece humanisation drawn from the piece seed (all zero/neutral when off)."""

    tempo_factor: float
    drift: float
    drift_period_s: float
    part_offset_ms: float
    note_jitter_ms: float
    velocity_jitter: float
    expression_db: float
    vibrato: bool
    reverb: dict | None


def _humanisation(config: SynthConfig, rng: np.random.Generator,
                  rng_reverb: np.random.Generator) -> Humanisation:
    reverb = None
    if rng_reverb.random() < config.reverb:
        reverb = {
            "room_size": round(float(rng_reverb.uniform(0.2, 0.9)), 3),
            "damp": round(float(rng_reverb.uniform(0.1, 0.6)), 3),
            "width": round(float(rng_reverb.uniform(0.5, 1.0)), 3),
            "level": round(float(rng_reverb.uniform(0.3, 0.9)), 3),
            "send": int(rng_reverb.integers(40, 110)),
        }
    if not config.humanise:
        return Humanisation(1.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, False, reverb)
    return Humanisation(
        tempo_factor=round(float(rng.uniform(0.9, 1.1)), 4),
        drift=round(float(rng.uniform(0.0, 0.04)), 4),
        drift_period_s=round(float(rng.uniform(6.0, 20.0)), 2),
        part_offset_ms=10.0,
        note_jitter_ms=8.0,
        velocity_jitter=8.0,
        expression_db=round(float(rng.uniform(6.0, 20.0)), 2),
        vibrato=True,
        reverb=reverb,
    )


def _time_map(start: float, end: float, qpm: float, h: Humanisation,
              rng: np.random.Generator, lead_in: float) -> tuple[np.ndarray, np.ndarray]:
    """Quarter-note grid and its seconds: one tempo with slow drift, shared by all parts."""
    q = np.linspace(start, end, max(2, int((end - start) * 48) + 1))
    tempo = qpm * h.tempo_factor
    period_q = max(h.drift_period_s * tempo / 60.0, 1.0)
    phase = rng.uniform(0, 2 * np.pi)
    factor = 1.0 + h.drift * np.sin(2 * np.pi * (q - start) / period_q + phase)
    dt = 60.0 / (tempo * factor)
    t = np.concatenate([[0.0], np.cumsum((dt[1:] + dt[:-1]) / 2 * np.diff(q))])
    return q, t + lead_in


_VIBRATO_CENTS = {"strings": (12.0, 28.0), "woodwinds": (6.0, 16.0), "brass": (0.0, 8.0)}


def _part_events(notes: Sequence[Note], code: str, shift: int, qmap: tuple[np.ndarray, np.ndarray],
                 end_q: float, h: Humanisation, rng: np.random.Generator
                 ) -> list[tuple[float, int, tuple]]:
    """Timed MIDI events (seconds, order, message args) of one part, note-offs before note-ons."""
    q, t = qmap
    at = lambda x: float(np.interp(x, q, t))  # noqa: E731
    offset = rng.normal(0, h.part_offset_ms / 1000)
    humanised = h.note_jitter_ms > 0
    articulation = rng.uniform(0.85, 1.0) if humanised else 0.95
    base_vel = int(rng.integers(64, 105)) if humanised else 90
    raw: list[list] = []  # [on, off, pitch, velocity]
    for n in notes:
        jitter = float(np.clip(rng.normal(0, h.note_jitter_ms / 1000), -0.025, 0.025))
        on = max(at(n.onset) + offset + jitter, 0.0)
        length = (at(min(n.onset + n.length, end_q)) - at(n.onset)) * articulation
        vel = int(np.clip(round(base_vel + rng.normal(0, h.velocity_jitter)), 20, 120))
        for p in _keep(n.pitches, code):
            pitch = int(np.clip(p + shift, 0, 127))
            raw.append([on, on + max(length, 0.05), pitch, vel])
    raw.sort(key=lambda r: (r[0], r[2]))
    last: dict[int, list] = {}
    notes_out = []
    for r in raw:  # same pitch overlaps: the earlier note ends before the next starts
        prev = last.get(r[2])
        if prev is not None and prev[1] > r[0] - 0.005:
            prev[1] = r[0] - 0.005
        last[r[2]] = r
        notes_out.append(r)
    notes_out = [r for r in notes_out if r[1] - r[0] >= 0.02]
    events: list[tuple[float, int, tuple]] = []
    for on, off, pitch, vel in notes_out:
        events.append((on, 2, ("note_on", pitch, vel)))
        events.append((off, 1, ("note_off", pitch, 0)))
    if h.vibrato and notes_out:
        lo, hi = _VIBRATO_CENTS[BY_CODE[code].family]
        cents = rng.uniform(lo, hi)
        rate = rng.uniform(4.8, 6.5)
        for on, off, _, _ in notes_out:
            events.append((on, 0, ("pitchwheel", 0)))
            s = on + 0.15
            while s < off and cents > 0:
                ramp = min(1.0, (s - on - 0.15) / 0.25 + 0.1)
                bend = cents / 200.0 * 8191 * ramp * math.sin(2 * math.pi * rate * (s - on))
                events.append((s, 0, ("pitchwheel", int(round(bend)))))
                s += 0.025
    if h.expression_db > 0 and notes_out:
        end = max(r[1] for r in notes_out)
        periods = rng.uniform(3.0, 12.0, size=2)
        phases = rng.uniform(0, 2 * np.pi, size=2)
        depth = h.expression_db * rng.uniform(0.5, 1.0)
        s = np.arange(0.0, end + 0.05, 0.05)
        wave = np.sin(2 * np.pi * s[:, None] / periods + phases).mean(axis=1)
        db = -depth * (0.5 - 0.5 * wave)
        cc = np.clip(np.round(127 * 10 ** (db / 40)), 1, 127).astype(int)
        change = np.flatnonzero(np.diff(cc, prepend=-1))
        events.extend((float(s[i]), 0, ("control_change", 11, int(cc[i]))) for i in change)
    return events


def _write_midi(path: Path, events: list[tuple[float, int, tuple]], program: int,
                end_s: float, reverb_send: int) -> None:
    import mido

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    head = [
        mido.Message("program_change", program=program, time=0),
        mido.Message("control_change", control=101, value=0, time=0),
        mido.Message("control_change", control=100, value=0, time=0),
        mido.Message("control_change", control=6, value=2, time=0),
        mido.Message("control_change", control=38, value=0, time=0),
        mido.Message("control_change", control=7, value=100, time=0),
        mido.Message("control_change", control=11, value=127, time=0),
        mido.Message("control_change", control=91, value=reverb_send, time=0),
        mido.Message("control_change", control=93, value=0, time=0),
    ]
    track.extend(head)
    now = 0
    for sec, _, args in sorted(events, key=lambda e: (round(e[0] * TICKS_PER_SECOND), e[1])):
        tick = max(int(round(sec * TICKS_PER_SECOND)), now)
        kind = args[0]
        if kind == "note_on":
            msg = mido.Message("note_on", note=args[1], velocity=args[2], time=tick - now)
        elif kind == "note_off":
            msg = mido.Message("note_off", note=args[1], velocity=0, time=tick - now)
        elif kind == "pitchwheel":
            msg = mido.Message("pitchwheel", pitch=int(np.clip(args[1], -8192, 8191)),
                               time=tick - now)
        else:
            msg = mido.Message("control_change", control=args[1], value=args[2], time=tick - now)
        track.append(msg)
        now = tick
    end_tick = max(int(round(end_s * TICKS_PER_SECOND)), now)
    # dummy controller at the common end time: every part renders to the same length
    track.append(mido.Message("control_change", control=110, value=0, time=end_tick - now))
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(ticks_per_beat=480)
    mid.tracks.append(track)
    mid.save(str(path))


def render_midi(midi: Path, wav: Path, font: Path, reverb: dict | None = None) -> np.ndarray:
    """Render one MIDI file with FluidSynth (``wav``: a scratch file, removed) -> mono float64
    at RENDER_RATE."""
    import soundfile as sf

    cmd = ["fluidsynth", "-ni", "-q", "-C", "0", "-g", "0.5", "-r", str(RENDER_RATE),
           "-O", "float", "-T", "wav", "-o", "synth.cpu-cores=1"]
    if reverb is None:
        cmd += ["-R", "0"]
    else:
        cmd += ["-R", "1",
                "-o", f"synth.reverb.room-size={reverb['room_size']}",
                "-o", f"synth.reverb.damp={reverb['damp']}",
                "-o", f"synth.reverb.width={reverb['width']}",
                "-o", f"synth.reverb.level={reverb['level']}"]
    if font.suffix.lower() == ".sf3":
        cmd += ["-o", "synth.dynamic-sample-loading=1"]
    cmd += ["-F", str(wav), str(font), str(midi)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wav.is_file():
        raise CusepError(f"fluidsynth failed on {midi.name}: {proc.stderr.strip()[:200]}")
    x, _ = sf.read(str(wav), dtype="float64", always_2d=True)
    wav.unlink()
    return x.mean(axis=1)


def _resample(x: np.ndarray, rate: int, stretch: float = 1.0,
              source_rate: int = RENDER_RATE) -> np.ndarray:
    """Resample from ``source_rate`` to ``rate``; ``stretch`` > 1 also slows down (and lowers)
    x."""
    from scipy.signal import resample_poly

    ratio = Fraction(rate, source_rate) * Fraction(stretch).limit_denominator(2000)
    if ratio == 1:
        return x
    return resample_poly(x, ratio.numerator, ratio.denominator)


def _shifted(events: list[tuple[float, int, tuple]], semitones: int
             ) -> list[tuple[float, int, tuple]]:
    """Events ``semitones`` higher and 2**(semitones/12) times faster (undone by _resample)."""
    if semitones == 0:
        return events
    speed = 2.0 ** (semitones / 12)
    out = []
    for sec, order, args in events:
        if args[0] in ("note_on", "note_off"):
            args = (args[0], int(np.clip(args[1] + semitones, 0, 127)), *args[2:])
        out.append((sec / speed, order, args))
    return out


def recording_config(config: SynthConfig) -> RecordingConfig:
    """The recording effects of a synth config."""
    return RecordingConfig(config.mic_eq_db, config.room, config.noise_db, config.level_db)


def performed_score(plan: PiecePlan, per_part: list[list[tuple[float, int, tuple]]]) -> Score:
    """The notes each player played, in seconds of the rendered audio (what a perfectly aligned
    score of the piece is)."""
    parts = []
    for k, (p, events) in enumerate(zip(plan.players, per_part, strict=True), start=1):
        sounding: dict[int, list[float]] = {}
        notes = []
        for sec, _, args in sorted(events, key=lambda e: (e[0], e[1])):
            if args[0] == "note_on":
                sounding.setdefault(args[1], []).append(sec)
            elif args[0] == "note_off" and sounding.get(args[1]):
                notes.append(ScoreNote(sounding[args[1]].pop(0), sec, args[1]))
        parts.append(ScorePart(f"player {k} ({BY_CODE[p.code].name})", BY_CODE[p.code].program,
                               p.code, tuple(sorted(notes, key=lambda n: (n.onset, n.pitch)))))
    return Score(Path(f"Sco_{plan.name}.mid"), tuple(parts))


def render_piece(plan: PiecePlan, notes: dict[int, list[Note]], config: SynthConfig,
                 font: Path, out_dir: Path) -> dict:
    """Render one planned piece into ``out_dir/plan.name`` (atomically); return its record.

    ``font``: a SoundFont file (FluidSynth) or a sample bank's folder (:mod:`.sampler`)."""
    import soundfile as sf

    ss = np.random.SeedSequence(plan.seed)
    rng_h, rng_t, rng_r, *rng_parts = [
        np.random.default_rng(s) for s in ss.spawn(3 + len(plan.players))
    ]
    h = _humanisation(config, rng_h, rng_r)
    timbres = [0] * len(plan.players)
    if config.timbre_shift:  # own stream: the other draws stay those of an unshifted render
        n = config.timbre_shift
        timbres = [int(v) for v in np.random.default_rng(ss.spawn(1)[0]).integers(
            -n, n + 1, size=len(plan.players))]
    lead_in = 0.2
    qmap = _time_map(plan.start, plan.end, plan.qpm, h, rng_t, lead_in)
    per_part = [
        _part_events(notes[p.part], p.code, p.shift, qmap, plan.end, h, rng)
        for p, rng in zip(plan.players, rng_parts, strict=True)
    ]
    last = max(e[0] for ev in per_part for e in ev)
    end_s = max(last, float(qmap[1][-1])) + (2.0 if h.reverb else 1.0)
    length = int(round(end_s * config.sample_rate))
    title = plan.name.split("_")[1]
    tmp = out_dir / f"{_TMP_PREFIX}{plan.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    stems = []
    sampled = font.is_dir()
    # own streams (spawned after the others): SoundFont renders stay those of earlier versions
    rng_sampler, rng_recording = (np.random.default_rng(s) for s in ss.spawn(2))
    with tempfile.TemporaryDirectory(prefix="cusep-synth-") as work:
        for k, (p, events, fs) in enumerate(zip(plan.players, per_part, timbres, strict=True),
                                            start=1):
            speed = 2.0 ** (fs / 12)
            if sampled:
                x = _resample(render_part(_shifted(events, fs), p.code, font, config.split,
                                          end_s / speed, rng_sampler),
                              config.sample_rate, stretch=speed, source_rate=BANK_RATE)
            else:
                midi = Path(work) / f"{k}.mid"
                _write_midi(midi, _shifted(events, fs), BY_CODE[p.code].program, end_s / speed,
                            h.reverb["send"] if h.reverb else 0)
                x = _resample(render_midi(midi, Path(work) / f"{k}.wav", font, h.reverb),
                              config.sample_rate, stretch=speed)
            x = x[:length] if len(x) >= length else np.pad(x, (0, length - len(x)))
            stems.append(x)
    stack, recording = apply_recording(np.stack(stems), config.sample_rate,
                                       recording_config(config), rng_recording)
    peak = max(float(np.abs(stack.sum(0)).max()), float(np.abs(stack).max()), 1e-9)
    q = np.clip(np.round(stack * (_PEAK / peak) * 32767), -32767, 32767).astype(np.int32)
    mix = q.sum(0)
    if np.abs(mix).max() > 32767:  # cannot happen with _PEAK < 1, kept as a guard
        raise CusepError(f"internal error: mix of {plan.name} clips")
    for k, (p, x) in enumerate(zip(plan.players, q, strict=True), start=1):
        sf.write(str(tmp / f"AuSep_{k}_{p.code}_{plan.index:04d}_{title}.wav"),
                 x.astype(np.int16), config.sample_rate, subtype="PCM_16")
    sf.write(str(tmp / f"AuMix_{plan.name}.wav"), mix.astype(np.int16), config.sample_rate,
             subtype="PCM_16")
    write_midi(performed_score(plan, per_part), tmp / f"Sco_{plan.name}.mid")
    record = {
        "name": plan.name,
        "index": plan.index,
        "split": config.split,
        "work": plan.work,
        "excerpt": {"index": plan.excerpt, "start_quarter": plan.start,
                    "end_quarter": plan.end, "qpm": plan.qpm},
        "players": [
            {"player": k, "code": p.code, "program": BY_CODE[p.code].program, "part": p.part,
             "part_name": p.part_name, "octave_shift": p.shift // 12, "timbre_shift": fs}
            for k, (p, fs) in enumerate(zip(plan.players, timbres, strict=True), start=1)
        ],
        "font": _font_label(plan.font),
        "font_file": font.name,
        "renderer": "sampler" if sampled else "fluidsynth",
        "recording": recording,
        "seed": plan.seed,
        "sample_rate": config.sample_rate,
        "duration_s": round(length / config.sample_rate, 4),
        "humanisation": {k: v for k, v in asdict(h).items() if k != "reverb"},
        "reverb": h.reverb,
    }
    if config.video:
        from .synth_video import render_piece_video

        record["video"] = render_piece_video(tmp, plan.name, [p.code for p in plan.players],
                                             per_part, mix, config.sample_rate, plan.seed)
    (tmp / PIECE_META).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    sync(tmp)
    replace_dir(tmp, out_dir / plan.name)
    return record


# --------------------------------------------------------------------------- dataset


def _output_options(config: SynthConfig) -> dict:
    d = asdict(config)
    for k in _RUN_FIELDS:
        d.pop(k)
    return json.loads(json.dumps(d))


def _prepare_out_dir(out_dir: Path, config: SynthConfig) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise CusepError(f"output {out_dir} is a file; give a folder.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".cusep-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise CusepError(
            f"cannot write to {out_dir} ({exc.strerror}); choose another folder."
        ) from None
    options = _output_options(config)
    config_file = out_dir / CONFIG_FILE
    entries = [p for p in out_dir.iterdir()]
    if config.force:
        for p in entries:
            if p.is_dir() and (p.name[:4].isdigit() or p.name.startswith(_TMP_PREFIX)):
                shutil.rmtree(p)
            elif p.name in (MANIFEST, CARD, CONFIG_FILE):
                p.unlink()
    elif config.resume:
        if config_file.is_file():
            old = json.loads(config_file.read_text())
            old.setdefault("video", False)  # sets rendered before --video existed
            for key in ("mic_eq_db", "room", "noise_db", "level_db"):  # ... and before these
                old.setdefault(key, 0.0)
            if old != options:
                diff = sorted(k for k in options if old.get(k) != options[k])
                raise CusepError(
                    f"{out_dir} was rendered with other options ({', '.join(diff)}); "
                    "use the same options with --resume, or --force to start again."
                )
        elif entries:
            raise CusepError(f"{out_dir} is not a cusep synth folder; cannot --resume there.")
    elif entries:
        raise CusepError(
            f"output folder {out_dir} is not empty; use --resume to continue or --force to "
            "replace it."
        )
    for p in out_dir.iterdir():
        if p.is_dir() and p.name.startswith(_TMP_PREFIX):
            shutil.rmtree(p)  # a piece that an interrupted run left half-written
    write_text(config_file, json.dumps(options, indent=1, sort_keys=True) + "\n")


def _card(manifest: dict) -> str:
    cfg = manifest["config"]
    minutes = manifest["minutes_per_instrument"]
    split = cfg["split"]
    players = Counter(len(p["players"]) for p in manifest["pieces"])
    fonts = Counter(p["font"] for p in manifest["pieces"])
    works = len({p["work"] for p in manifest["pieces"]})
    reverb = sum(1 for p in manifest["pieces"] if p["reverb"])
    total = sum(p["duration_s"] for p in manifest["pieces"]) / 60
    video = ("`Vid_<piece>.mp4` per piece (players side by side, 25 fps h264 + AAC of the mix; "
             "each player moves with its own note onsets and loudness) with `boxes.json` (one "
             "pixel box per player, `player<k>` in `AuSep_<k>_` order)" if cfg.get("video")
             else "none (`cusep synth --video` renders one per piece, with `boxes.json`)")
    lines = [
        "# cusep synthetic chamber-music set",
        "",
        f"Rendered by `cusep synth` from the music21 corpus ({', '.join(cfg['sources'])}) with "
        "FluidSynth (SoundFonts) or cusep's sampler (sample banks), in the URMP layout (one "
        "folder per piece, `AuMix_*` = exact sum of the `AuSep_*` stems, mono 16-bit wav).",
        "",
        f"- split: **{split}** (splits are disjoint by work: fixed hash of the work's corpus path)",
        f"- pieces: {len(manifest['pieces'])} from {works} works, {total:.1f} minutes of mix",
        "- players per piece: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(players.items())),
        "- SoundFonts: " + ", ".join(f"{k} ({v} pieces)" for k, v in sorted(fonts.items())),
        f"- sample rate: {cfg['sample_rate']} Hz; excerpts of ~{cfg['excerpt_seconds']:g} s",
        f"- humanisation: {'on' if cfg['humanise'] else 'off'}; reverb on {reverb} pieces",
        "- timbre shift per player (rendered transposed, resampled back): "
        + (f"-{cfg['timbre_shift']}..+{cfg['timbre_shift']} semitones"
           if cfg.get("timbre_shift") else "none"),
        "- recording: " + _recording_line(cfg),
        f"- seed: {cfg['seed']}",
        f"- video: {video}",
        "",
        "## Minutes per instrument",
        "",
        f"| instrument | code | GM program | {split} |",
        "|---|---|---|---|",
    ]
    for code in CODES:
        if code in minutes:
            inst = BY_CODE[code]
            lines.append(f"| {inst.name} | {code} | {inst.program} | {minutes[code]:.2f} |")
    banks = manifest.get("sample_banks") or {}
    for label, summary in banks.items():
        lines += ["", f"## Sample bank `{label}` (real recorded notes, {split} notes)", "",
                  "| code | notes | MIDI range | licences |", "|---|---|---|---|"]
        for code in CODES:
            if code in summary:
                d = summary[code]
                lines.append(f"| {code} | {d['notes']} | {d['low']}-{d['high']} | "
                             f"{'; '.join(d['licences'])} |")
    lines += ["", "`manifest.json` lists every piece: source work, excerpt, part -> instrument, "
              "SoundFont or sample bank, seed, duration, split, humanisation, reverb and "
              "recording settings.", ""]
    return "\n".join(lines)


def _recording_line(cfg: dict) -> str:
    parts = []
    if cfg.get("mic_eq_db"):
        parts.append(f"microphone EQ +-{cfg['mic_eq_db']:g} dB and a 40-120 Hz high-pass "
                     "per player")
    if cfg.get("room"):
        parts.append(f"a room on {cfg['room']:.0%} of pieces (RT60 0.15-0.7 s, DRR 4-18 dB)")
    if cfg.get("noise_db"):
        parts.append(f"a noise floor ~{cfg['noise_db']:g} dB below each player")
    if cfg.get("level_db"):
        parts.append(f"player levels +-{cfg['level_db']:g} dB")
    return "; ".join(parts) if parts else "none (dry, as rendered)"


def _bank_notes(folder: Path, split: str) -> dict:
    """Notes, MIDI range and licences per instrument of the bank's notes used by ``split``."""
    from .sampler import load_bank

    used = {n.file for v in load_bank(str(folder), split).values() for n in v}
    return bank_summary(folder, used)


def render_dataset(out_dir: str | Path, config: SynthConfig, progress: bool = True,
                   cache_dir: Path | None = None) -> dict:
    """Render a whole set into ``out_dir``; return the manifest (also written as manifest.json).

    ``cache_dir`` holds parsed corpus works (default :func:`default_cache_dir`).
    Raises CusepError on bad options, missing tools or an output folder in the way.
    """
    config = _validate(config)
    font_files = check_requirements(config.fonts)
    for path in font_files.values():
        if path.is_dir():
            check_bank(path, config.split, config.instruments)
    try:
        import mido  # noqa: F401
    except ImportError:
        raise CusepError("mido is not installed; install the synth extra: "
                         "pip install -e '.[synth]'") from None
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, config)
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir

    from ..progress import progress_bar

    bar = progress_bar(disable=not progress, transient=False)
    with bar:
        parse_task = bar.add_task("parsing works", total=None)
        plans, works = plan_pieces(config, cache_dir,
                                   on_parsed=lambda: bar.advance(parse_task))
        bar.update(parse_task, total=bar.tasks[parse_task].completed)
        done = {p.name for p in plans if (out_dir / p.name / PIECE_META).is_file()}
        todo = [p for p in plans if p.name not in done]
        task = bar.add_task("rendering pieces", total=len(plans), completed=len(done))

        def job_args(plan: PiecePlan):
            w = works[plan.work]
            notes = {p.part: _window(w.parts[p.part].notes, plan.start, plan.end)
                     for p in plan.players}
            return plan, notes, config, font_files[plan.font], out_dir

        if config.jobs <= 1:
            for plan in todo:
                render_piece(*job_args(plan))
                bar.advance(task)
        else:
            with ProcessPoolExecutor(config.jobs) as pool:
                futures: set[Future] = set()
                queue = list(todo)
                while queue or futures:
                    while queue and len(futures) < 2 * config.jobs:
                        futures.add(pool.submit(render_piece, *job_args(queue.pop(0))))
                    finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                    for f in finished:
                        f.result()
                        bar.advance(task)

    records = [json.loads((out_dir / p.name / PIECE_META).read_text()) for p in plans]
    minutes = {c: 0.0 for c in config.instruments}
    for r in records:
        for player in r["players"]:
            minutes[player["code"]] += r["duration_s"] / 60
    manifest = {
        "format": "cusep-synth/1",
        "config": _output_options(config),
        "fonts": {_font_label(f): str(p) for f, p in sorted(font_files.items())},
        "sample_banks": {_font_label(f): _bank_notes(p, config.split)
                         for f, p in sorted(font_files.items()) if p.is_dir()},
        "minutes_per_instrument": {c: round(m, 3) for c, m in minutes.items()},
        "pieces": records,
    }
    write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    write_text(out_dir / CARD, _card(manifest))
    return manifest

