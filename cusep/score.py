"""Scores of what was recorded: MIDI and MusicXML files read into one note list per player.

A :class:`Score` holds :class:`ScorePart` s, each with its instrument class (from
``--instruments`` in part order, the part's MIDI program, or its name) and its notes in seconds
of the score's own tempo. Parts of one instrument stay separate here (they are players);
:meth:`Score.sources` merges them into one source per instrument, as separation does.
MIDI files are read with mido, MusicXML (``.musicxml``, ``.mxl``, ``.xml``) with music21.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import CusepError
from .instruments import BY_CODE, CODES, InstrumentError, parse_instrument

MUSIC21_HINT = "music21 is not installed; install the synth extra: pip install -e '.[synth]'"
MIDI_SUFFIXES = (".mid", ".midi")
XML_SUFFIXES = (".musicxml", ".mxl", ".xml")
_BY_PROGRAM = {BY_CODE[c].program: c for c in CODES}
# General MIDI programs of neighbouring patches -> the class they are played by
_PROGRAM_FAMILY = {44: "vn", 45: "vn", 64: "sax", 66: "sax", 67: "sax", 69: "ob", 72: "fl",
                   74: "fl", 75: "fl", 59: "tpt"}  # tremolo/pizzicato strings: violin


@dataclass(frozen=True)
class ScoreNote:
    """One note: onset and offset in seconds, MIDI pitch."""

    onset: float
    offset: float
    pitch: int


@dataclass(frozen=True)
class ScorePart:
    """One player's part: its name in the file, MIDI program (None: not stated), instrument
    class and notes sorted by onset."""

    name: str
    program: int | None
    code: str
    notes: tuple[ScoreNote, ...]


@dataclass(frozen=True)
class Score:
    path: Path
    parts: tuple[ScorePart, ...]

    @property
    def duration(self) -> float:
        """Seconds until the last note ends."""
        return max(n.offset for p in self.parts for n in p.notes)

    def sources(self) -> dict[str, tuple[ScoreNote, ...]]:
        """Instrument code -> the notes of all its parts (sorted by onset), in part order."""
        out: dict[str, list[ScoreNote]] = {}
        for part in self.parts:
            out.setdefault(part.code, []).extend(part.notes)
        return {c: tuple(sorted(notes, key=lambda n: (n.onset, n.pitch)))
                for c, notes in out.items()}

    def spans(self, codes: Sequence[str], tolerance: float = 0.15
              ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each instrument of ``codes``: its notes widened by ``tolerance`` s on both sides,
        as (starts, running maximum of the ends), sorted by start (the input of
        :func:`activity_at`; empty arrays for an instrument without a part)."""
        sources = self.sources()  # sorted by onset
        out = []
        for code in codes:
            notes = sources.get(code, ())
            on = np.array([n.onset for n in notes], np.float64) - tolerance
            off = np.array([n.offset for n in notes], np.float64) + tolerance
            out.append((on, np.maximum.accumulate(off) if len(off) else off))
        return out

    def activity(self, codes: Sequence[str], times: np.ndarray, tolerance: float = 0.15
                 ) -> np.ndarray:
        """Where each instrument of ``codes`` plays: (K, T) in [0, 1] at ``times`` (seconds,
        (T,)), 1 within ``tolerance`` s of one of its notes, falling to 0 over as long again
        (alignment is never exact). Instruments without a part are 0 throughout."""
        return activity_at(self.spans(codes, tolerance), times, tolerance)

    def warped(self, warp) -> Score:
        """Every onset and offset mapped through ``warp`` (seconds array -> seconds array)."""
        parts = []
        for part in self.parts:
            times = np.array([(n.onset, n.offset) for n in part.notes], np.float64)
            new = warp(times.reshape(-1)).reshape(-1, 2)
            notes = tuple(ScoreNote(float(a), float(max(b, a + 1e-3)), n.pitch)
                          for (a, b), n in zip(new, part.notes, strict=True))
            parts.append(replace(part, notes=notes))
        return replace(self, parts=tuple(parts))


def activity_at(spans: list[tuple[np.ndarray, np.ndarray]], times: np.ndarray,
                tolerance: float) -> np.ndarray:
    """:meth:`Score.activity` from :meth:`Score.spans` -> (K, T) float32."""
    times = np.asarray(times, np.float64)
    out = np.zeros((len(spans), len(times)), np.float32)
    for k, (on, off) in enumerate(spans):
        if not len(on):
            continue
        # distance from each time to the nearest widened note (0 inside one)
        k_prev = np.searchsorted(on, times, side="right") - 1
        prev = np.clip(k_prev, 0, None)
        inside = (k_prev >= 0) & (times <= off[prev])
        after = np.where(k_prev >= 0, times - off[prev], np.inf)
        k_next = np.clip(k_prev + 1, 0, len(on) - 1)
        before = np.where(k_prev + 1 < len(on), on[k_next] - times, np.inf)
        gap = np.where(inside, 0.0, np.minimum(np.abs(after), np.abs(before)))
        out[k] = np.clip(1.0 - gap / tolerance, 0.0, 1.0)
    return out


def _bad(path: Path, reason: str) -> CusepError:
    return CusepError(f"{path}: {reason}")


def _code_of(path: Path, name: str, program: int | None, index: int) -> str:
    """The instrument class of a part, from its program or its name."""
    if program is not None and program in _BY_PROGRAM:
        return _BY_PROGRAM[program]
    for candidate in (name, name.split()[0] if name.split() else ""):
        try:
            return parse_instrument(candidate.rstrip("0123456789 .").strip() or candidate)
        except InstrumentError:
            pass
    if program is not None and program in _PROGRAM_FAMILY:
        return _PROGRAM_FAMILY[program]
    stated = f"MIDI program {program}" if program is not None else "no MIDI program"
    raise _bad(path, f"part {index} ('{name or 'unnamed'}', {stated}) is not one of the 13 "
                     f"instruments ({', '.join(CODES)}); name the parts' instruments in order "
                     "with --instruments")


def _read_midi(path: Path) -> list[tuple[str, int | None, list[ScoreNote]]]:
    import mido

    try:
        mid = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise _bad(path, f"is not a readable MIDI file ({e}); give an intact .mid file") from e
    # one part per (track, channel) with notes; times from the merged tempo map
    parts: dict[tuple[int, int], dict] = {}
    tempo_map: list[tuple[int, int]] = [(0, 500000)]  # (tick, microseconds per beat)
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                tempo_map.append((tick, msg.tempo))
    tempo_map.sort()
    ticks = np.array([t for t, _ in tempo_map], np.float64)
    tempos = np.array([u for _, u in tempo_map], np.float64)
    per_tick = tempos / 1e6 / max(mid.ticks_per_beat, 1)
    starts = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * per_tick[:-1])])

    def seconds(tick: int) -> float:
        k = int(np.searchsorted(ticks, tick, side="right")) - 1
        return float(starts[k] + (tick - ticks[k]) * per_tick[k])

    for t, track in enumerate(mid.tracks):
        tick, name = 0, track.name.strip()
        programs: dict[int, int] = {}
        sounding: dict[tuple[int, int], list[int]] = {}
        for msg in track:
            tick += msg.time
            if msg.type == "program_change":
                programs[msg.channel] = msg.program
            elif msg.type in ("note_on", "note_off"):
                key = (msg.channel, msg.note)
                if msg.type == "note_on" and msg.velocity > 0:
                    sounding.setdefault(key, []).append(tick)
                elif sounding.get(key):
                    on = sounding[key].pop(0)
                    part = parts.setdefault((t, msg.channel), {"name": name, "notes": []})
                    part["program"] = programs.get(msg.channel)
                    if msg.channel == 9:
                        part["drums"] = True
                    part["notes"].append(ScoreNote(seconds(on), seconds(tick), msg.note))
    return [(p["name"], p.get("program"), p["notes"]) for _, p in sorted(parts.items())
            if not p.get("drums")]


def require_music21():
    """Import music21 or raise a CusepError telling how to install it."""
    try:
        import music21
    except ImportError:
        raise CusepError(MUSIC21_HINT) from None
    return music21


def _read_musicxml(path: Path) -> list[tuple[str, int | None, list[ScoreNote]]]:
    music21 = require_music21()
    try:
        parsed = music21.converter.parse(str(path))
    except Exception as e:  # music21 raises many kinds; all mean the same to the user
        raise _bad(path, f"is not a readable MusicXML file ({type(e).__name__}); give an intact "
                         ".musicxml or .mxl file") from e
    parts = []
    for part in getattr(parsed, "parts", []) or []:
        inst = part.getInstrument(returnDefault=False)
        program = getattr(inst, "midiProgram", None) if inst is not None else None
        name = part.partName or (inst.instrumentName if inst is not None else "") or ""
        notes = []
        flat = part.flatten().stripTies()
        for entry in flat.secondsMap:
            el = entry["element"]
            if getattr(el, "isRest", True) or not hasattr(el, "pitches"):
                continue
            if el.duration.isGrace:
                continue
            on, length = float(entry["offsetSeconds"]), float(entry["durationSeconds"])
            for p in el.pitches:
                notes.append(ScoreNote(on, on + length, int(round(p.ps))))
        parts.append((name, program, notes))
    return parts


def read_score(path: str | Path, instruments: str | Sequence[str] | None = None) -> Score:
    """Read a MIDI or MusicXML score: one :class:`ScorePart` per part that has notes.

    ``instruments``: the class of each part in part order (codes or names; a list or
    "vn,va,vc"); otherwise each part's MIDI program, then its name, decides. One-line
    CusepErrors for unreadable files, scores without notes, parts that map to none of the 13
    classes and an ``instruments`` list whose length is not the number of parts.
    """
    path = Path(path)
    if not path.is_file():
        raise CusepError(f"{path}: score not found; give a .mid, .musicxml or .mxl file")
    suffix = path.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        raw = _read_midi(path)
    elif suffix in XML_SUFFIXES:
        raw = _read_musicxml(path)
    else:
        raise CusepError(f"{path}: unknown score format '{suffix}'; give a MIDI (.mid) or "
                         "MusicXML (.musicxml, .mxl, .xml) file")
    raw = [(name, program, notes) for name, program, notes in raw if notes]
    if not raw:
        raise _bad(path, "holds no notes (no part with notes); give the score of the recording")
    if instruments is not None:  # one per part: an instrument may repeat (two violins)
        items = instruments.split(",") if isinstance(instruments, str) else list(instruments)
        codes = tuple(parse_instrument(c) for c in items if c.strip())
        if len(codes) != len(raw):
            raise _bad(path, f"has {len(raw)} part(s) with notes but --instruments names "
                             f"{len(codes)}; name one instrument per part, in part order")
    else:
        codes = tuple(_code_of(path, name, program, k)
                      for k, (name, program, _) in enumerate(raw, start=1))
    parts = tuple(ScorePart(name, program, code,
                            tuple(sorted(notes, key=lambda n: (n.onset, n.pitch))))
                  for (name, program, notes), code in zip(raw, codes, strict=True))
    return Score(path, parts)


def read_note_list(path: str | Path, code: str, name: str | None = None) -> ScorePart:
    """One player's notes as URMP annotates them (``Notes_<k>_<code>_<piece>.txt``): a note per
    line, ``onset frequency duration`` (seconds, Hz, seconds), separated by white space; blank
    lines are skipped. Frequencies are rounded to the nearest MIDI pitch. One-line CusepErrors
    for a missing file, a malformed line and a file without notes."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise _bad(path, f"cannot read the note list ({e.strerror or e})") from e
    notes = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            onset, freq, length = (float(f) for f in fields[:3])
            if len(fields) < 3 or not (freq > 0 and length >= 0 and onset >= 0):
                raise ValueError
        except ValueError:
            raise _bad(path, f"line {number} is not 'onset frequency duration' (seconds, Hz, "
                             f"seconds): {line.strip()[:60]!r}") from None
        pitch = int(np.clip(np.round(69 + 12 * np.log2(freq / 440.0)), 0, 127))
        notes.append(ScoreNote(onset, onset + max(length, 1e-3), pitch))
    if not notes:
        raise _bad(path, "holds no notes; give the player's note annotation")
    return ScorePart(name or path.stem, BY_CODE[code].program, code,
                     tuple(sorted(notes, key=lambda n: (n.onset, n.pitch))))


def onset_error(aligned: Score, reference: Score) -> float:
    """Median onset error in seconds of ``aligned`` against ``reference`` (same parts, in
    order): note by note where a part has as many notes in both, else each aligned onset
    against the nearest reference onset of the same pitch in that part (NaN: no pair)."""
    errors = []
    for a, r in zip(aligned.parts, reference.parts, strict=False):
        on_a = np.array([n.onset for n in a.notes])
        if len(a.notes) == len(r.notes):
            errors.append(np.abs(on_a - np.array([n.onset for n in r.notes])))
            continue
        for pitch in {n.pitch for n in a.notes}:
            ref = np.sort([n.onset for n in r.notes if n.pitch == pitch])
            if not len(ref):
                continue
            mine = np.array([n.onset for n in a.notes if n.pitch == pitch])
            k = np.searchsorted(ref, mine)
            below, above = ref[np.clip(k - 1, 0, len(ref) - 1)], ref[np.clip(k, 0, len(ref) - 1)]
            near = np.minimum(np.abs(mine - below), np.abs(mine - above))
            errors.append(near)
    return float(np.median(np.concatenate(errors))) if errors else math.nan


def write_midi(score: Score, path: str | Path) -> None:
    """Write ``score`` as a type-1 MIDI file (one track per part, its instrument's program,
    tempo 120 so that ticks are exact milliseconds), atomically."""
    import mido

    path = Path(path)
    tpb = 480  # at 120 bpm: 960 ticks per second
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    head = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0)])
    mid.tracks.append(head)
    for k, part in enumerate(score.parts):
        channel = k if k < 9 else k + 1  # skip the drum channel
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=part.name or part.code,
                                                 time=0),
                                mido.Message("program_change", channel=channel % 16,
                                             program=BY_CODE[part.code].program, time=0)])
        events = sorted([(round(n.onset * 960), 1, n.pitch) for n in part.notes]
                        + [(round(n.offset * 960), 0, n.pitch) for n in part.notes])
        now = 0
        for tick, on, pitch in events:
            kind = "note_on" if on else "note_off"
            track.append(mido.Message(kind, channel=channel % 16, note=pitch,
                                      velocity=80 if on else 0, time=max(tick - now, 0)))
            now = max(tick, now)
        mid.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            mid.save(str(tmp))
    except OSError as e:
        raise CusepError(f"{path}: cannot write ({e.strerror or e}); choose a writable "
                         "output path") from e
