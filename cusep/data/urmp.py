"""Reader for the URMP folder layout (also what ``cusep synth`` writes).

One folder per piece ``NN_Name_inst1_inst2...`` holding ``AuMix_<folder>.wav``, one
``AuSep_<k>_<inst>_NN_Name.wav`` per player and ``Vid_<folder>.mp4``; other files are ignored.
An optional ``manifest.json`` at the root may give each piece a ``split``.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CusepError
from ..instruments import BY_CODE

URMP_SINGLE_INSTRUMENT: tuple[str, ...] = (
    "02_Sonata_vn_vn",
    "04_Allegro_fl_fl",
    "05_Entertainer_tpt_tpt",
    "06_Entertainer_sax_sax",
)

LAYOUT_HINT = (
    "expected one folder per piece named 'NN_Name_inst1_inst2...' (e.g. 01_Jupiter_vn_vc) "
    "holding AuSep_<k>_<inst>_NN_Name.wav per player and AuMix_....wav"
)

BOXES_FILE = "boxes.json"
"""The players' boxes of a piece's video (see cusep.video)."""
_SEP = re.compile(r"^AuSep_(\d+)_([A-Za-z]+)_(.+)\.wav$", re.IGNORECASE)
_AUDIO_EXTS = (".wav", ".flac")


@dataclass(frozen=True)
class Track:
    """One player's isolated recording."""

    path: Path
    instrument: str
    player: int


@dataclass(frozen=True)
class Piece:
    """One multitrack piece: the mix, one track per player (player order), the video and its
    boxes.json (one box per player, in player order; cusep synth --video writes it)."""

    name: str
    folder: Path
    mix: Path | None
    tracks: tuple[Track, ...]
    video: Path | None
    split: str | None = None
    boxes: Path | None = None

    @property
    def instruments(self) -> tuple[str, ...]:
        """Distinct instrument codes in player order."""
        return tuple(dict.fromkeys(t.instrument for t in self.tracks))

    @property
    def sources(self) -> dict[str, tuple[Track, ...]]:
        """Tracks grouped by instrument (players of one instrument are summed into one source)."""
        return {c: tuple(t for t in self.tracks if t.instrument == c) for c in self.instruments}


def parse_piece_name(name: str) -> tuple[str, tuple[str, ...]] | None:
    """Split ``NN_Name_inst1_inst2`` into (``NN_Name``, codes); None when it is not a piece name.

    Trailing tokens that are instrument codes are the players; the rest (number first) is the
    title. Returns None for names without a leading number, a title or at least one code.
    """
    tokens = name.split("_")
    if len(tokens) < 3 or not tokens[0].isdigit():
        return None
    codes: list[str] = []
    while len(tokens) > 2 and tokens[-1].lower() in BY_CODE:
        codes.insert(0, tokens.pop().lower())
    if not codes:
        return None
    return "_".join(tokens), tuple(codes)


def _read_splits(root: Path) -> dict[str, str]:
    """Piece name -> split from ``root/manifest.json`` (any of a few shapes); {} when absent."""
    path = root / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable {path}: {exc}", stacklevel=3)
        return {}
    entries: Iterable = ()
    if isinstance(data, dict):
        pieces = data.get("pieces", data)
        if isinstance(pieces, dict):
            entries = ({"name": k, **v} for k, v in pieces.items() if isinstance(v, dict))
        elif isinstance(pieces, list):
            entries = pieces
    elif isinstance(data, list):
        entries = data
    splits: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name") or entry.get("folder")
        split = entry.get("split")
        if isinstance(name, str) and isinstance(split, str):
            splits[Path(name).name] = split
    return splits


def _first(folder: Path, prefix: str, exts: tuple[str, ...]) -> Path | None:
    found = sorted(
        p for p in folder.iterdir() if p.name.startswith(prefix) and p.suffix.lower() in exts
    )
    return found[0] if found else None


def _read_piece(folder: Path, codes: tuple[str, ...], split: str | None) -> Piece | str:
    """The Piece in ``folder``, or the reason it is skipped."""
    tracks: list[Track] = []
    for path in folder.iterdir():
        m = _SEP.match(path.name)
        if m and path.is_file():
            tracks.append(Track(path, m.group(2).lower(), int(m.group(1))))
    tracks.sort(key=lambda t: t.player)
    if not tracks:
        return "no AuSep_<k>_<inst>_....wav files"
    found = tuple(t.instrument for t in tracks)
    players = [t.player for t in tracks]
    if found != codes or players != list(range(1, len(codes) + 1)):
        got = ", ".join(f"{t.player}:{t.instrument}" for t in tracks)
        return f"its AuSep files ({got}) disagree with its name (players {', '.join(codes)})"
    mix = _first(folder, "AuMix_", _AUDIO_EXTS)
    video = _first(folder, "Vid_", (".mp4", ".mkv", ".mov", ".avi", ".webm"))
    boxes = folder / BOXES_FILE
    return Piece(folder.name, folder, mix, tuple(tracks), video, split,
                 boxes if boxes.is_file() else None)


def scan_urmp(root: str | Path, *, require_mix: bool = False) -> list[Piece]:
    """All pieces under ``root``, sorted by name.

    Folders that are not pieces, have unknown instruments, or whose AuSep files disagree with
    their name are skipped with a warning naming them (as are pieces without a mix when
    ``require_mix``). Raises CusepError when ``root`` is missing or holds no piece.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise CusepError(f"URMP-layout folder {root} does not exist; {LAYOUT_HINT}.")
    if not root.is_dir():
        raise CusepError(f"{root} is not a folder; give the folder holding the pieces.")
    splits = _read_splits(root)
    pieces: list[Piece] = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith((".", "_")):
            continue
        parsed = parse_piece_name(folder.name)
        if parsed is None:
            head, _, last = folder.name.rpartition("_")
            why = (
                f"unknown instrument code '{last}' in its name (known: {', '.join(BY_CODE)})"
                if head[:1].isdigit() and head.count("_") >= 1
                else f"not a piece folder ({LAYOUT_HINT})"
            )
            warnings.warn(f"skipping {folder}: {why}", stacklevel=2)
            continue
        piece = _read_piece(folder, parsed[1], splits.get(folder.name))
        if isinstance(piece, str):
            warnings.warn(f"skipping {folder}: {piece}", stacklevel=2)
            continue
        if require_mix and piece.mix is None:
            warnings.warn(f"skipping {folder}: no AuMix_....wav file", stacklevel=2)
            continue
        pieces.append(piece)
    if not pieces:
        raise CusepError(f"no piece found in {root}; {LAYOUT_HINT}.")
    return pieces


def score_file(piece: Piece) -> Path | None:
    """The piece's score, ``Sco_*.mid`` in its folder (one part per player, in player order, as
    URMP and ``cusep synth`` write it); None: it has none."""
    found = sorted(piece.folder.glob("Sco_*.mid"))
    return found[0] if found else None


def exclude_single_instrument(pieces: Iterable[Piece]) -> list[Piece]:
    """Drop pieces whose players all play one instrument (the four URMP duets of one kind)."""
    return [p for p in pieces if len(p.instruments) > 1]


def select_split(pieces: Iterable[Piece], split: str) -> list[Piece]:
    """Pieces whose manifest split is ``split``."""
    return [p for p in pieces if p.split == split]
