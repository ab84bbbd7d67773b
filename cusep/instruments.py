"""The 13 instrument classes of URMP and Solos, and parsing of user instrument lists."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import CusepError


@dataclass(frozen=True)
class Instrument:
    """One instrument class.

    ``program`` is the 0-based General MIDI program used to render it; ``low``/``high`` are the
    MIDI notes of its usual playable range (used to move parts into range when rendering).
    ``solos`` is the folder name the Solos dataset uses for it.
    """

    code: str
    name: str
    program: int
    low: int
    high: int
    solos: str
    family: str


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("vn", "violin", 40, 55, 100, "Violin", "strings"),
    Instrument("va", "viola", 41, 48, 88, "Viola", "strings"),
    Instrument("vc", "cello", 42, 36, 76, "Cello", "strings"),
    Instrument("db", "double bass", 43, 28, 67, "DoubleBass", "strings"),
    Instrument("fl", "flute", 73, 60, 96, "Flute", "woodwinds"),
    Instrument("ob", "oboe", 68, 58, 91, "Oboe", "woodwinds"),
    Instrument("cl", "clarinet", 71, 50, 91, "Clarinet", "woodwinds"),
    Instrument("bn", "bassoon", 70, 34, 75, "Bassoon", "woodwinds"),
    Instrument("sax", "saxophone", 65, 49, 81, "Saxophone", "woodwinds"),
    Instrument("tpt", "trumpet", 56, 54, 82, "Trumpet", "brass"),
    Instrument("hn", "french horn", 60, 34, 77, "Horn", "brass"),
    Instrument("tbn", "trombone", 57, 40, 72, "Trombone", "brass"),
    Instrument("tba", "tuba", 58, 28, 58, "Tuba", "brass"),
)

CODES: tuple[str, ...] = tuple(i.code for i in INSTRUMENTS)
BY_CODE: dict[str, Instrument] = {i.code: i for i in INSTRUMENTS}

_ALIASES: dict[str, str] = {
    **{i.code: i.code for i in INSTRUMENTS},
    **{i.name: i.code for i in INSTRUMENTS},
    **{i.solos.lower(): i.code for i in INSTRUMENTS},
    "horn": "hn",
    "contrabass": "db",
    "bass": "db",
    "doublebass": "db",
    "double-bass": "db",
    "french-horn": "hn",
    "sax": "sax",
    "alto sax": "sax",
    "tenor sax": "sax",
}


class InstrumentError(CusepError):
    """An instrument name that is not one of the 13 classes."""


def parse_instrument(name: str) -> str:
    """Return the code of one instrument given by code or name, in any case.

    Raises InstrumentError naming the valid codes and the closest match.
    """
    key = " ".join(name.strip().lower().replace("_", " ").split())
    if key in _ALIASES:
        return _ALIASES[key]
    close = difflib.get_close_matches(key, list(_ALIASES), n=1, cutoff=0.65)
    hint = ""
    if close:
        code = _ALIASES[close[0]]
        hint = f" Did you mean '{code}' ({BY_CODE[code].name})?"
    raise InstrumentError(
        f"unknown instrument '{name.strip()}'.{hint} Valid codes: {', '.join(CODES)}."
    )


def parse_instruments(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Parse "vn,va,vc" (or a list of names) into a tuple of distinct codes, order kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [s for s in (x.strip() for x in items) if s]
    if not items:
        raise InstrumentError(f"no instrument given. Valid codes: {', '.join(CODES)}.")
    codes: list[str] = []
    for item in items:
        code = parse_instrument(item)
        if code in codes:
            raise InstrumentError(
                f"instrument '{code}' is listed twice; list each instrument once."
            )
        codes.append(code)
    return tuple(codes)


def label_vector(codes: Sequence[str], classes: Sequence[str] = CODES) -> list[float]:
    """Multi-hot vector over ``classes`` with ones at ``codes``."""
    present = set(codes)
    return [1.0 if c in present else 0.0 for c in classes]
