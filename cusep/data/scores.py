"""music21 corpus works as plain note lists: which works exist, their split, and their parts.

A parsed work is a :class:`Work`: for each part a list of :class:`Note` in quarter lengths
(ties merged, grace notes dropped, chord pitches sorted high to low) and the tempo marks.
Parsed works are cached as JSON so that later runs do not parse the corpus again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import write_text
from ..errors import CusepError
from ..score import require_music21

#: Source name -> (music21 composer folder, accepted file suffixes).
SOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bach": ("bach", (".mxl", ".xml")),
    "haydn": ("haydn", (".mxl",)),
    "mozart": ("mozart", (".mxl",)),
    "beethoven": ("beethoven", (".mxl",)),
    "trecento": ("trecento", (".mxl", ".xml")),
    "monteverdi": ("monteverdi", (".mxl",)),
    "palestrina": ("palestrina", (".krn",)),
}
DEFAULT_SOURCES: tuple[str, ...] = (
    "bach", "haydn", "mozart", "beethoven", "trecento", "monteverdi",
)
#: Quarter notes per minute used when a work has no explicit tempo mark.
DEFAULT_QPM: dict[str, float] = {
    "bach": 84.0, "haydn": 112.0, "mozart": 112.0, "beethoven": 112.0,
    "trecento": 120.0, "monteverdi": 120.0, "palestrina": 120.0,
}
SPLITS: tuple[str, ...] = ("train", "valid", "test")
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Note:
    """One note or chord: onset and length in quarter notes, MIDI pitches high to low."""

    onset: float
    length: float
    pitches: tuple[int, ...]


@dataclass(frozen=True)
class Part:
    name: str
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class Work:
    """A parsed corpus work. ``tempos`` holds (onset in quarters, quarters per minute)."""

    path: str
    source: str
    parts: tuple[Part, ...]
    tempos: tuple[tuple[float, float], ...]
    length: float


def work_key(path: str) -> str:
    """The unit of the train/valid/test split: movements of one opus share a key.

    ``haydn/opus1no1/movement2.mxl`` -> ``haydn/opus1no1``; ``bach/bwv269.mxl`` -> ``bach/bwv269``.
    """
    p = Path(path)
    if p.stem.lower().startswith("movement"):
        return p.parent.as_posix()
    return p.with_suffix("").as_posix()


def split_of(path: str, fractions: tuple[float, float] = (0.8, 0.1)) -> str:
    """Fixed split of a work (~80/10/10 by default) from a hash of its work key."""
    digest = hashlib.sha1(f"cusep-split:{work_key(path)}".encode()).hexdigest()
    u = int(digest[:12], 16) / float(16**12)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "valid"
    return "test"


def work_title(path: str) -> str:
    """Work name for folder names, letters and digits only (e.g. ``opus74no1movement1``)."""
    p = Path(path).with_suffix("")
    parts = p.parts[1:] if len(p.parts) > 1 else p.parts
    name = re.sub(r"[^A-Za-z0-9]", "", "".join(parts))
    return name[:32] or "work"


def list_works(sources: Sequence[str] = DEFAULT_SOURCES) -> list[str]:
    """Corpus paths (relative to music21's corpus folder, sorted) of the given sources."""
    require_music21()
    from music21 import common, corpus

    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise CusepError(
            f"unknown source '{unknown[0]}'; choose from {', '.join(SOURCES)}."
        )
    root = Path(common.getCorpusFilePath())
    paths: set[str] = set()
    for source in sources:
        folder, suffixes = SOURCES[source]
        for p in corpus.getComposer(folder):
            p = Path(p)
            if p.suffix.lower() in suffixes:
                paths.add(p.relative_to(root).as_posix())
    return sorted(paths)


def _source_of(path: str) -> str:
    return path.split("/", 1)[0]


def parse_work(path: str) -> Work:
    """Parse one corpus work into note lists (ties merged, grace notes dropped)."""
    require_music21()
    from music21 import corpus, tempo

    score = corpus.parse(path, forceSource=True)
    parts = []
    for index, part in enumerate(score.parts):
        stripped = part.stripTies(matchByPitch=True)
        notes = []
        for n in stripped.flatten().notes:
            if n.duration.isGrace or n.quarterLength <= 0:
                continue
            pitches = sorted({int(round(p.ps)) for p in n.pitches}, reverse=True)
            if not pitches:
                continue
            notes.append(Note(float(n.offset), float(n.quarterLength), tuple(pitches)))
        notes.sort(key=lambda x: (x.onset, -x.pitches[0]))
        name = part.partName or f"Part {index + 1}"
        parts.append(Part(str(name), tuple(notes)))
    tempos: dict[float, float] = {}
    for mark in score.flatten().getElementsByClass(tempo.MetronomeMark):
        if getattr(mark, "numberImplicit", False) and not mark.text:
            continue  # a playback-only default (120), not a mark of the work
        qpm = mark.getQuarterBPM()
        if qpm and 20 <= qpm <= 320:
            tempos.setdefault(float(mark.offset), float(qpm))
    length = max((n.onset + n.length for p in parts for n in p.notes), default=0.0)
    return Work(path, _source_of(path), tuple(parts), tuple(sorted(tempos.items())), length)


def _to_json(work: Work) -> dict:
    d = asdict(work)
    d["parts"] = [
        {"name": p.name, "notes": [[n.onset, n.length, list(n.pitches)] for n in p.notes]}
        for p in work.parts
    ]
    return d


def _from_json(d: dict) -> Work:
    parts = tuple(
        Part(p["name"], tuple(Note(float(o), float(ln), tuple(ps)) for o, ln, ps in p["notes"]))
        for p in d["parts"]
    )
    tempos = tuple((float(a), float(b)) for a, b in d["tempos"])
    return Work(d["path"], d["source"], parts, tempos, float(d["length"]))


def default_cache_dir() -> Path:
    """``$CUSEP_CACHE/scores`` or ``~/.cache/cusep/scores``."""
    base = os.environ.get("CUSEP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cusep"
    )
    return Path(base) / "scores"


def load_work(path: str, cache_dir: Path | None) -> Work:
    """Parse ``path`` or read it from the JSON cache in ``cache_dir`` (None: no cache)."""
    if cache_dir is None:
        return parse_work(path)
    music21 = require_music21()
    key = hashlib.sha1(f"{_CACHE_VERSION}:{music21.__version__}:{path}".encode()).hexdigest()
    file = Path(cache_dir) / f"{key[:20]}.json"
    if file.is_file():
        try:
            return _from_json(json.loads(file.read_text()))
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry: parse again
    work = parse_work(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    write_text(file, json.dumps(_to_json(work), separators=(",", ":")))
    return work
