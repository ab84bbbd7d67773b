"""A sampler of real recorded notes: cusep's own renderer beside FluidSynth (``--fonts samples``).

A sample bank is a folder of single-note recordings with a ``manifest.json`` (a list of records
with at least ``file``, ``instrument`` (cusep code), ``midi``; optionally ``cents_off``,
``dynamic`` (pp..ff or unknown), ``articulation`` (sustain, vibrato, staccato, spiccato),
``variant``, ``source``, ``rms_dbfs``, ``licence``), the format of the curated bank the
developers render with. Each note of a part is played by

- the nearest recorded note of the player's *voice* (one source/variant of the instrument, so a
  player keeps one timbre), else of the whole instrument, shifted to the note's pitch by
  resampling (linear interpolation at :data:`BANK_RATE`), with the sample's measured detuning
  (``cents_off``) corrected;
- among equally near notes, the one whose dynamic is nearest the note's velocity, and a short
  (staccato) recording for short notes when there is one;
- sustained past the recording's length by looping its steady part with cross-fades (the
  recorded vibrato and bow or breath noise are kept: no synthetic vibrato is added);
- released with a raised-cosine fade of the family's release time where it is cut short;
- at a level set by velocity (40 log10(v/127) dB, as General MIDI) from a common rms, times the
  expression (CC 11) curve of the part.

Splits: a bank's records are split by a fixed hash of the file name (:func:`valid_files`), so
``--split train`` renders with other recordings than ``valid``/``test``: validation audio of
notes the model never heard.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import CusepError
from ..instruments import BY_CODE, CODES

BANK_RATE = 22050  # every note is resampled to this rate once, when the bank is loaded
MANIFEST = "manifest.json"
SAMPLES_ENV = "CUSEP_SAMPLES"
VALID_SHARE = 0.2  # share of each instrument's recordings kept for the valid/test splits
_DYNAMICS = {"ppp": 1, "pp": 2, "p": 3, "mp": 4, "mf": 5, "unknown": 5, "f": 6, "ff": 7,
             "fff": 8}
_SHORT = ("staccato", "spiccato")
_RELEASE_S = {"strings": 0.18, "woodwinds": 0.08, "brass": 0.10}
_LOOP_FADE_S = 0.08
_RMS_DB = -20.0  # every note is scaled to this rms before the velocity gain


@dataclass(frozen=True)
class SampleNote:
    """One recorded note of a bank, audio mono float32 at :data:`BANK_RATE`."""

    file: str
    code: str
    midi: float  # true pitch: nominal MIDI + cents_off / 100
    dynamic: int
    short: bool
    voice: str
    audio: np.ndarray


def _hash(file: str) -> int:
    return int(hashlib.sha1(file.encode()).hexdigest()[:12], 16)


def valid_files(records: Sequence[dict]) -> set[str]:
    """The records kept for the valid/test splits: per instrument, the ``VALID_SHARE`` (at
    least one, and never all) of its files with the smallest fixed hash of the file name."""
    by_code: dict[str, list[str]] = {}
    for r in records:
        by_code.setdefault(r["instrument"], []).append(r["file"])
    out: set[str] = set()
    for files in by_code.values():
        if len(files) < 2:
            continue
        k = min(max(1, round(VALID_SHARE * len(files))), len(files) - 1)
        out.update(sorted(files, key=_hash)[:k])
    return out


def resolve_bank(spec: str) -> Path | None:
    """The folder of a sample-bank spec, or None when ``spec`` is not one.

    ``samples`` means the folder in ``$CUSEP_SAMPLES``; a folder holding ``manifest.json`` is a
    bank too. Raises CusepError when ``samples`` is asked for but not set up.
    """
    key = spec.strip()
    if key.lower() == "samples":
        root = os.environ.get(SAMPLES_ENV, "")
        if not root:
            raise CusepError(
                f"--fonts samples needs a sample bank: set {SAMPLES_ENV} to a folder of "
                f"recorded notes with a {MANIFEST} (or give the folder's path as the font)."
            )
        folder = Path(root).expanduser()
    else:
        folder = Path(key).expanduser()
        if not folder.is_dir():
            return None
    if not (folder / MANIFEST).is_file():
        raise CusepError(f"sample bank {folder} has no {MANIFEST}; give a folder of recorded "
                         "notes with a manifest (see cusep.data.sampler).")
    return folder


def _read_records(folder: Path) -> list[dict]:
    try:
        records = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise CusepError(f"cannot read {folder / MANIFEST}: {exc}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise CusepError(f"{folder / MANIFEST} must be a list of records")
    bad = [r for r in records if not {"file", "instrument", "midi"} <= set(r)]
    if bad:
        raise CusepError(f"{folder / MANIFEST}: every record needs file, instrument and midi "
                         f"(first bad one: {json.dumps(bad[0])[:80]})")
    return records


def bank_summary(folder: Path, files: set[str] | None = None) -> dict[str, dict]:
    """Per instrument: notes, MIDI range and licences of a bank's records (all, or ``files``),
    for data cards."""
    out: dict[str, dict] = {}
    for r in _read_records(folder):
        if files is not None and r["file"] not in files:
            continue
        d = out.setdefault(r["instrument"], {"notes": 0, "low": 127, "high": 0, "licences": set()})
        d["notes"] += 1
        d["low"], d["high"] = min(d["low"], int(r["midi"])), max(d["high"], int(r["midi"]))
        d["licences"].add(str(r.get("licence", "unknown")))
    return {c: {**d, "licences": sorted(d["licences"])} for c, d in out.items()}


def _load_audio(path: Path) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if rate != BANK_RATE:
        g = math.gcd(int(rate), BANK_RATE)
        x = resample_poly(x, BANK_RATE // g, int(rate) // g).astype(np.float32)
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    return x * (10 ** (_RMS_DB / 20) / max(rms, 1e-6))


@lru_cache(maxsize=4)
def load_bank(folder: str, split: str) -> dict[str, list[SampleNote]]:
    """The notes of a bank for ``split`` (train: the train records; valid/test: the others),
    code -> notes sorted by pitch. Cached per process (renders load a bank once)."""
    notes: dict[str, list[SampleNote]] = {}
    root = Path(folder)
    records = _read_records(root)
    held_out = valid_files(records)
    for r in records:
        code = r["instrument"]
        if code not in BY_CODE or (r["file"] in held_out) != (split != "train"):
            continue
        try:
            audio = _load_audio(root / r["file"])
        except (OSError, RuntimeError, ValueError) as exc:
            raise CusepError(f"cannot read sample {root / r['file']}: {exc}") from None
        if audio.size < BANK_RATE // 20:
            continue
        notes.setdefault(code, []).append(SampleNote(
            file=r["file"], code=code,
            midi=float(r["midi"]) + float(r.get("cents_off") or 0.0) / 100.0,
            dynamic=_DYNAMICS.get(str(r.get("dynamic", "unknown")).lower(), 5),
            short=str(r.get("articulation", "")).lower() in _SHORT,
            voice=f"{r.get('source', '')}/{r.get('variant', '')}",
            audio=audio,
        ))
    for v in notes.values():
        v.sort(key=lambda n: n.midi)
    return notes


def check_bank(folder: Path, split: str, codes: Sequence[str]) -> None:
    """CusepError unless the bank has notes of every instrument in ``codes`` for ``split``."""
    notes = load_bank(str(folder), split)
    missing = [c for c in codes if not notes.get(c)]
    if missing:
        raise CusepError(f"sample bank {folder} has no {split} notes of {', '.join(missing)}; "
                         "add recordings or leave those instruments out (--instruments).")


def _velocity_dynamic(velocity: int) -> int:
    return int(np.clip(round(1 + 7 * (velocity - 16) / 111), 1, 8))


def _choose(notes: list[SampleNote], voice: str, pitch: int, velocity: int, seconds: float,
            rng: np.random.Generator) -> SampleNote:
    own = [n for n in notes if n.voice == voice]
    pool = own if own and min(abs(n.midi - pitch) for n in own) <= 3 else notes
    best = min(abs(n.midi - pitch) for n in pool)
    near = [n for n in pool if abs(n.midi - pitch) <= best + 1.0]
    short = seconds < 0.25
    kind = [n for n in near if n.short == short] or near
    target = _velocity_dynamic(velocity)
    closest = min(abs(n.dynamic - target) for n in kind)
    final = [n for n in kind if abs(n.dynamic - target) == closest]
    return final[int(rng.integers(len(final)))]


def _extend(x: np.ndarray, needed: int) -> np.ndarray:
    """x longer than ``needed`` samples: its steady part (30-85 %) looped with cross-fades."""
    if x.size >= needed:
        return x
    fade = int(_LOOP_FADE_S * BANK_RATE)
    a, b = int(0.3 * x.size), int(0.85 * x.size)
    if b - a < 2 * fade + 1:  # too short to loop: hold by repeating the whole note
        fade = max(1, (b - a) // 3)
    loop = x[a:b]
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out = x[:b].copy()
    while out.size < needed:
        head = out[-fade:] * ramp[::-1] + loop[:fade] * ramp
        out = np.concatenate([out[:-fade], head, loop[fade:]])
    return out


def _note_audio(note: SampleNote, pitch: int, seconds: float, release: float) -> np.ndarray:
    """The note shifted to ``pitch``, ``seconds`` long plus its release, at BANK_RATE."""
    step = 2.0 ** ((pitch - note.midi) / 12.0)  # source samples per output sample
    n_hold = max(int(round(seconds * BANK_RATE)), 1)
    n_rel = int(round(release * BANK_RATE))
    natural = int(note.audio.size / step)  # output length of the whole recording
    n_out = min(n_hold + n_rel, natural) if natural > n_hold else n_hold + n_rel
    src = _extend(note.audio, int(math.ceil(n_out * step)) + 2)
    pos = np.arange(n_out, dtype=np.float64) * step
    y = np.interp(pos, np.arange(src.size), src).astype(np.float32)
    if natural > n_hold + n_rel or natural <= n_hold:  # cut short (or looped): fade out
        tail = min(n_rel, y.size - n_hold) if y.size > n_hold else 0
        if tail > 0:
            y[n_hold:n_hold + tail] *= (0.5 + 0.5 * np.cos(np.linspace(0, np.pi, tail))
                                        ).astype(np.float32)
            y[n_hold + tail:] = 0.0
    attack = min(int(0.003 * BANK_RATE), y.size)  # no click if the recording starts loud
    y[:attack] *= np.linspace(0.0, 1.0, attack, dtype=np.float32)
    return y


def render_part(events: Sequence[tuple[float, int, tuple]], code: str, bank: Path, split: str,
                end_s: float, rng: np.random.Generator) -> np.ndarray:
    """Play one part's timed MIDI events with the bank's notes of ``code``.

    events: (seconds, order, ("note_on", pitch, velocity) | ("note_off", pitch, 0) |
    ("control_change", 11, value) | others, ignored) as :mod:`cusep.data.synth` makes them.
    Returns mono float64 at :data:`BANK_RATE`, ``end_s`` seconds long.
    """
    notes = load_bank(str(bank), split).get(code)
    if not notes:
        raise CusepError(f"sample bank {bank} has no {split} notes of {code}")
    voices = sorted({n.voice for n in notes})
    counts = np.array([sum(n.voice == v for n in notes) for v in voices], dtype=np.float64)
    voice = voices[int(rng.choice(len(voices), p=counts / counts.sum()))]
    release = _RELEASE_S[BY_CODE[code].family] * float(rng.uniform(0.7, 1.4))
    length = int(round(end_s * BANK_RATE))
    out = np.zeros(length + BANK_RATE, dtype=np.float64)
    starts: dict[int, tuple[float, int]] = {}
    expression: list[tuple[float, float]] = [(0.0, 1.0)]
    for sec, _, args in sorted(events, key=lambda e: (e[0], e[1])):
        kind = args[0]
        if kind == "note_on":
            starts[args[1]] = (sec, args[2])
        elif kind == "note_off" and args[1] in starts:
            on, vel = starts.pop(args[1])
            seconds = max(sec - on, 0.02)
            note = _choose(notes, voice, args[1], vel, seconds, rng)
            y = _note_audio(note, args[1], seconds, release) * (vel / 127.0) ** 2
            i = int(round(on * BANK_RATE))
            j = min(i + y.size, out.size)
            if i < j:
                out[i:j] += y[: j - i]
        elif kind == "control_change" and args[1] == 11:
            expression.append((sec, (args[2] / 127.0) ** 2))
    t = np.arange(out.size) / BANK_RATE
    times, values = zip(*expression, strict=True)
    out *= np.interp(t, np.asarray(times), np.asarray(values))
    return out[:length]


def instruments_with_notes(bank: Path, split: str) -> tuple[str, ...]:
    """Codes the bank can play for ``split``, in class order."""
    notes = load_bank(str(bank), split)
    return tuple(c for c in CODES if notes.get(c))
