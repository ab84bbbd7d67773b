"""boxes.json: the players of a video, each a box in pixels (or relative to the frame), an
optional instrument and an optional time span; validated with one line naming the entry.

A player's box is ``(x, y, w, h)`` in pixels of the video frame, ``(x, y)`` its top-left corner.
boxes.json is either a bare list of players (pixel units) or an object::

    {"units": "pixels" | "relative",          # default "pixels"; relative: fractions of W, H
     "players": [{"box": [x, y, w, h],        # required
                  "instrument": "vn",         # optional: code or name
                  "name": "Anna",             # optional, default "player<k>"
                  "start": 0.0, "end": 31.5}  # optional span (s) where the player plays
     ]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CusepError
from ..instruments import InstrumentError, parse_instrument

_UNITS = ("pixels", "relative")
_TOP_KEYS = ("units", "players")
_PLAYER_KEYS = ("box", "instrument", "name", "start", "end")
_EDGE_TOLERANCE = 0.02  # a box may stick out of the frame by this fraction of W / H (clipped)
_MAX_OVERLAP = 0.25  # of the smaller box's area
TIME_EPS = 1e-6
"""Seconds: times this close to a span's ends (or to a frame's time) count as on them."""


@dataclass(frozen=True)
class Player:
    """One player of boxes.json, resolved against a video frame."""

    index: int  # 1-based position in boxes.json
    box: tuple[int, int, int, int]  # x, y, w, h in pixels of the frame (clipped to it)
    code: str | None  # instrument code, or None when not given
    name: str  # display name, "player<index>" unless given
    span: tuple[float, float] | None  # (start, end) seconds where the player plays; None: always

    @property
    def label(self) -> str:
        """File-name stem of the player's stem: ``player<index>_<code>`` or ``player<index>``."""
        return f"player{self.index}_{self.code}" if self.code else f"player{self.index}"

    def active(self, t: np.ndarray) -> np.ndarray:
        """Boolean mask over times ``t`` (seconds): inside the player's span (inclusive)."""
        t = np.asarray(t, dtype=np.float64)
        if self.span is None:
            return np.ones(t.shape, dtype=bool)
        return (t >= self.span[0] - TIME_EPS) & (t <= self.span[1] + TIME_EPS)



def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt_box(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def _resolve_box(
    raw: object, units: str, width: int, height: int, where: str
) -> tuple[int, int, int, int]:
    """``[x, y, w, h]`` in ``units`` -> integer pixels clipped to the frame, or CusepError."""
    if (not isinstance(raw, list) or len(raw) != 4
            or not all(_is_number(v) for v in raw)):
        raise CusepError(
            f"{where}: \"box\" must be a list of 4 numbers [x, y, width, height], "
            f"not {json.dumps(raw)}"
        )
    x, y, w, h = (float(v) for v in raw)
    if w <= 0 or h <= 0:
        raise CusepError(f"{where}: box {_fmt_box(raw)} is empty (width and height must be > 0)")
    if units == "relative":
        if not all(0.0 <= v <= 1.0 for v in raw):
            raise CusepError(
                f"{where}: box {_fmt_box(raw)} has values outside [0, 1]; with \"units\": "
                "\"relative\" give fractions of the frame width and height"
            )
        x, y, w, h = x * width, y * height, w * width, h * height
    tol_x, tol_y = _EDGE_TOLERANCE * width, _EDGE_TOLERANCE * height
    if x < -tol_x or y < -tol_y or x + w > width + tol_x or y + h > height + tol_y:
        hint = "" if units == "relative" else (
            " (or \"units\": \"relative\" for fractions of the frame)"
        )
        raise CusepError(
            f"{where}: box {_fmt_box(raw)} lies outside the {width}x{height} video frame; "
            f"give x + width <= {width} and y + height <= {height}{hint}"
        )
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    if x1 <= x0 or y1 <= y0:
        raise CusepError(
            f"{where}: box {_fmt_box(raw)} covers no whole pixel of the {width}x{height} "
            "video frame; make it larger"
        )
    return x0, y0, x1 - x0, y1 - y0


def _seconds(entry: Mapping[str, object], key: str, where: str) -> float | None:
    if key not in entry:
        return None
    v = entry[key]
    if not _is_number(v) or v < 0:
        raise CusepError(
            f"{where}: \"{key}\" must be a number of seconds >= 0, not {json.dumps(v)}"
        )
    return float(v)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area of two boxes as a fraction of the smaller box's area."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / min(a[2] * a[3], b[2] * b[3])


def parse_boxes(
    data: object, width: int, height: int, source: str = "boxes.json"
) -> tuple[Player, ...]:
    """Validate parsed boxes.json ``data`` for a ``width`` x ``height`` video -> players.

    Boxes become integer pixels clipped to the frame (a box may stick out by up to 2 % of the
    frame). Raises CusepError naming ``source`` and the entry for: wrong structure or types,
    unknown keys, a missing or empty box, a box outside the frame, two boxes overlapping by
    more than 25 % of the smaller one, an unknown instrument, start >= end, no players.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, not {width}x{height}")
    units = "pixels"
    if isinstance(data, dict):
        unknown = [k for k in data if k not in _TOP_KEYS]
        if unknown:
            raise CusepError(
                f"{source}: unknown key \"{unknown[0]}\"; allowed keys: "
                f"{', '.join(_TOP_KEYS)}"
            )
        if "units" in data:
            units = data["units"]
            if units not in _UNITS:
                raise CusepError(
                    f"{source}: \"units\" must be \"pixels\" or \"relative\", not "
                    f"{json.dumps(units)}"
                )
        if "players" not in data:
            raise CusepError(f"{source}: missing \"players\"; give a list of players with boxes")
        entries = data["players"]
        if not isinstance(entries, list):
            raise CusepError(f"{source}: \"players\" must be a list of players, not "
                             f"{type(entries).__name__}")
    elif isinstance(data, list):
        entries = data
    else:
        raise CusepError(
            f"{source}: expected a list of players or an object with \"players\", not "
            f"{type(data).__name__}; see the boxes.json format in the README"
        )
    if not entries:
        raise CusepError(f"{source}: no players; give at least one player with a \"box\"")

    players: list[Player] = []
    for k, entry in enumerate(entries, start=1):
        where = f"{source}: player {k}"
        if not isinstance(entry, dict):
            raise CusepError(
                f"{where}: expected an object such as {{\"box\": [x, y, width, height]}}, "
                f"not {json.dumps(entry)}"
            )
        unknown = [key for key in entry if key not in _PLAYER_KEYS]
        if unknown:
            raise CusepError(
                f"{where}: unknown key \"{unknown[0]}\"; allowed keys: {', '.join(_PLAYER_KEYS)}"
            )
        if "box" not in entry:
            raise CusepError(f"{where}: missing \"box\"; give \"box\": [x, y, width, height]")
        box = _resolve_box(entry["box"], units, width, height, where)
        code = None
        if entry.get("instrument") is not None:
            instrument = entry["instrument"]
            if not isinstance(instrument, str):
                raise CusepError(f"{where}: \"instrument\" must be a code or name such as "
                                 f"\"vn\", not {json.dumps(instrument)}")
            try:
                code = parse_instrument(instrument)
            except InstrumentError as e:
                raise CusepError(f"{where}: {e}") from e
        name = entry.get("name", f"player{k}")
        if not isinstance(name, str) or not name.strip():
            raise CusepError(
                f"{where}: \"name\" must be a non-empty string, not {json.dumps(name)}"
            )
        start, end = _seconds(entry, "start", where), _seconds(entry, "end", where)
        span = None
        if start is not None or end is not None:
            span = (start or 0.0, math.inf if end is None else end)
            if span[0] >= span[1]:
                raise CusepError(
                    f"{where}: \"start\" ({span[0]:g} s) must be before \"end\" ({span[1]:g} s)"
                )
        players.append(Player(k, box, code, name.strip(), span))

    for i, a in enumerate(players):
        for b in players[i + 1:]:
            share = _overlap(a.box, b.box)
            if share > _MAX_OVERLAP:
                raise CusepError(
                    f"{source}: players {a.index} and {b.index}: boxes overlap by "
                    f"{share:.0%} of the smaller box (at most {_MAX_OVERLAP:.0%}); "
                    "draw each box around one player"
                )
    return tuple(players)


def load_boxes(path: str | Path, width: int, height: int) -> tuple[Player, ...]:
    """Read and validate a boxes.json file for a ``width`` x ``height`` video -> players."""
    path = Path(path)
    if not path.exists():
        raise CusepError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise CusepError(f"{path}: is a folder; give the boxes.json file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CusepError(f"{path}: is not a UTF-8 text file; save it as UTF-8 JSON") from e
    except OSError as e:
        raise CusepError(f"{path}: cannot be read ({e.strerror}); check its permissions") from e
    if not text.strip():
        raise CusepError(f"{path}: is empty; give a list of players with boxes")
    try:
        data = json.loads(text)
    except RecursionError:
        raise CusepError(f"{path}: is nested too deeply to be a boxes.json; give a list of "
                         "players with boxes") from None
    except json.JSONDecodeError as e:
        raise CusepError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}); fix the syntax"
        ) from e
    return parse_boxes(data, width, height, source=str(path))


def check_fit(players: Sequence[Player], width: int, height: int) -> None:
    """ValueError unless every player's box lies inside a ``width`` x ``height`` frame."""
    for player in players:
        x, y, w, h = player.box
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
            raise ValueError(
                f"player {player.index}: box {player.box} does not fit the {width}x{height} "
                "frames; resolve the boxes against this video's size"
            )
