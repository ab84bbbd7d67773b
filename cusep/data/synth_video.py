"""Videos of synthetic pieces (``cusep synth --video``): the players side by side, URMP-style.

Each player is a simple figure in its own cell (about 160x200 px) whose instrument has a
distinct colour, shape and size per instrument code. Motion is driven by that player's own MIDI
events, in the audio's time base (frame ``i`` shows time ``i / fps`` seconds):

- at each note onset the player's "arm" (bow, fingers, valve hand, slide) swings to the other
  side of its travel over :data:`SWING_S` seconds;
- while the player sounds, the body sways and the instrument brightens in proportion to the
  loudness (velocity x CC11 expression), released within ~0.2 s after the notes end;
- a silent player does not move at all.

Per piece folder this writes ``Vid_<piece>.mp4`` (h264 video + AAC audio of the mix) and
``boxes.json`` (pixel boxes, one per player, ``name`` = ``player<k>`` in ``AuSep_<k>_`` order).
Frames and boxes are deterministic in the seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import CusepError
from .urmp import BOXES_FILE

FPS = 25
CELL_W = 160
CELL_H = 200
SWING_S = 0.15  # duration of the arm's swing after an onset
RELEASE_S = 0.06  # time constant of the loudness release after the notes end
MERGE_S = 0.04  # onsets closer than this (chords, jitter) are one swing
SWAY_PX = 3  # body sway at full loudness
MARGIN = 3  # box margin around everything a figure can draw
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
             7350)
_LOUD_FLOOR = 0.03  # below this a player counts as silent (no sway, base colour)
_SKIN = (226, 184, 150)

Colour = tuple[int, int, int]


# --------------------------------------------------------------------------- looks


def _rect(w: int, h: int) -> np.ndarray:
    return np.ones((h, w), dtype=bool)


def _ellipse(w: int, h: int) -> np.ndarray:
    y = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    x = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    return (x[None, :] ** 2 + y[:, None] ** 2) <= 1.0


def _ring(w: int, h: int, thick: int) -> np.ndarray:
    m = _ellipse(w, h)
    m[thick:h - thick, thick:w - thick] &= ~_ellipse(w - 2 * thick, h - 2 * thick)
    return m


@dataclass(frozen=True)
class _Shape:
    """One primitive of an instrument, relative to the figure's anchor (top-left ``x``, ``y``)."""

    mask: np.ndarray  # (h, w) bool
    x: int
    y: int
    colour: Colour
    role: str  # "body" (brightens with loudness) or "arm" (moves at onsets)


@dataclass(frozen=True)
class _Look:
    shapes: tuple[_Shape, ...]
    axis: str  # the arm's direction of travel: "x" or "y"
    travel: int  # the arm moves between -travel and +travel pixels


def _look(code: str) -> _Look:
    """Instrument drawing of ``code``: anchor (0, 0) is the middle of the player's chest."""
    arm_c: Colour = _SKIN
    bow: Colour = (238, 228, 190)
    if code in ("vn", "va"):  # small body at the left shoulder, bow across it
        w, h, c = (24, 38, (205, 125, 50)) if code == "vn" else (30, 48, (160, 82, 38))
        shapes = [(_ellipse(w, h), -34 - w // 2, -56, c, "body"),
                  (_rect(4, 20), -36, -74, (60, 35, 20), "body"),
                  (_rect(60, 3), -64, -56 + h // 2, bow, "arm")]
        axis, travel = "x", 16
    elif code in ("vc", "db"):  # big body standing in front of the player
        w, h, c, y = (46, 74, (140, 60, 30), 6) if code == "vc" else (58, 96, (96, 44, 20), -6)
        shapes = [(_rect(6, 50), -3, y - 46, (50, 30, 15), "body"),
                  (_ellipse(w, h), -w // 2, y, c, "body"),
                  (_rect(w + 26, 4), -(w + 26) // 2, y + h * 5 // 8, bow, "arm")]
        axis, travel = "x", 20
    elif code == "fl":  # long thin horizontal tube at the mouth
        shapes = [(_rect(98, 6), -14, -76, (215, 215, 228), "body"),
                  (_rect(10, 12), 44, -79, arm_c, "arm")]
        axis, travel = "x", 14
    elif code in ("ob", "cl"):  # long thin vertical tube, small bell
        w, h, c = (8, 66, (40, 30, 30)) if code == "ob" else (10, 80, (18, 18, 26))
        bell = (14, 10) if code == "ob" else (22, 14)
        shapes = [(_rect(w, h), -w // 2, -74, c, "body"),
                  (_ellipse(*bell), -bell[0] // 2, -74 + h - 4, c, "body"),
                  (_rect(16, 8), -8, -50, arm_c, "arm")]
        axis, travel = "y", 12
    elif code == "bn":  # tall thick wooden tube beside the player
        shapes = [(_rect(18, 118), 16, -86, (150, 74, 38), "body"),
                  (_rect(20, 3), -2, -72, (200, 180, 120), "body"),
                  (_rect(14, 10), 18, -40, arm_c, "arm")]
        axis, travel = "y", 14
    elif code == "sax":  # gold tube with a wide bell at the bottom
        c = (216, 176, 60)
        shapes = [(_rect(12, 58), -6, -70, c, "body"),
                  (_ellipse(34, 26), -4, -18, c, "body"),
                  (_rect(16, 8), -8, -52, arm_c, "arm")]
        axis, travel = "y", 12
    elif code == "tpt":  # short horizontal tube, round bell
        c = (235, 195, 70)
        shapes = [(_rect(56, 8), 6, -80, c, "body"),
                  (_ellipse(18, 28), 60, -90, c, "body"),
                  (_rect(10, 12), 24, -72, arm_c, "arm")]
        axis, travel = "y", 10
    elif code == "hn":  # coiled ring with a bell
        c = (200, 140, 55)
        shapes = [(_ring(56, 56, 9), -28, -52, c, "body"),
                  (_ellipse(28, 28), 16, -22, c, "body"),
                  (_rect(12, 12), -40, -40, arm_c, "arm")]
        axis, travel = "y", 12
    elif code == "tbn":  # long horizontal tube, moving slide
        c = (226, 182, 66)
        shapes = [(_rect(72, 6), 4, -80, c, "body"),
                  (_ellipse(22, 30), 76, -92, c, "body"),
                  (_rect(36, 12), 34, -74, (180, 140, 50), "arm")]
        axis, travel = "x", 14
    elif code == "tba":  # big dark-gold body with a wide bell on top
        c = (170, 128, 44)
        shapes = [(_ellipse(62, 88), -31, -40, c, "body"),
                  (_ellipse(54, 18), -27, -58, (205, 165, 70), "body"),
                  (_rect(12, 14), -44, -6, arm_c, "arm")]
        axis, travel = "y", 12
    else:
        raise CusepError(f"no video look for instrument '{code}'")
    return _Look(tuple(_Shape(*s) for s in shapes), axis, travel)


def _person(torso: Colour, skin: Colour) -> list[_Shape]:
    return [_Shape(_rect(12, 58), -16, 22, (40, 40, 48), "person"),
            _Shape(_rect(12, 58), 4, 22, (40, 40, 48), "person"),
            _Shape(_rect(40, 84), -20, -62, torso, "person"),
            _Shape(_ellipse(26, 28), -13, -92, skin, "person")]


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class Figure:
    """One player's drawing: absolute anchor, shapes and the box around all it can draw."""

    code: str
    anchor: tuple[int, int]
    shapes: tuple[_Shape, ...]
    axis: str
    travel: int
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels
    sway_period: float
    sway_phase: float


@dataclass(frozen=True)
class Scene:
    """The static part of a piece's video: frame size, background and one figure per player."""

    width: int
    height: int
    background: np.ndarray  # (height, width, 3) uint8
    figures: tuple[Figure, ...]


def _extent(shapes: Sequence[_Shape], axis: str, travel: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of everything drawn, arm travel and sway included."""
    x0 = y0 = 10**6
    x1 = y1 = -(10**6)
    for s in shapes:
        h, w = s.mask.shape
        dx = travel if s.role == "arm" and axis == "x" else 0
        dy = travel if s.role == "arm" and axis == "y" else 0
        x0, x1 = min(x0, s.x - dx - SWAY_PX), max(x1, s.x + w + dx + SWAY_PX)
        y0, y1 = min(y0, s.y - dy), max(y1, s.y + h + dy)
    return x0, y0, x1, y1


def make_scene(codes: Sequence[str], seed: int) -> Scene:
    """Lay out players with instruments ``codes`` side by side (deterministic in ``seed``)."""
    if not codes:
        raise CusepError("a video needs at least one player")
    rng = np.random.default_rng([int(seed), 11])
    width, height = CELL_W * len(codes), CELL_H
    base = np.array([58, 60, 70]) + rng.integers(-18, 19, size=3)
    floor = np.clip(base * 0.7, 0, 255)
    background = np.empty((height, width, 3), np.uint8)
    background[:] = np.clip(base, 0, 255).astype(np.uint8)
    background[int(height * 0.8):] = floor.astype(np.uint8)
    for k in range(1, len(codes)):  # thin separators between the cells
        background[:, k * CELL_W - 1] = np.clip(base - 12, 0, 255).astype(np.uint8)
    figures = []
    for k, code in enumerate(codes):
        look = _look(code)
        grey = int(rng.integers(35, 90))  # clothes: dark, low saturation, unlike instruments
        torso = tuple(int(grey + v) for v in rng.integers(-12, 13, size=3))
        skin = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in _SKIN)
        tint = rng.integers(-8, 9, size=3)
        inst = tuple(
            _Shape(s.mask, s.x, s.y,
                   tuple(int(np.clip(c + t, 0, 255)) for c, t in zip(s.colour, tint, strict=True))
                   if s.role == "body" else s.colour, s.role)
            for s in look.shapes
        )
        shapes = tuple(_person(torso, skin)) + inst
        x0, y0, x1, y1 = _extent(shapes, look.axis, look.travel)
        slack_x = (CELL_W - 2 * MARGIN - (x1 - x0)) // 2
        slack_y = (CELL_H - 2 * MARGIN - (y1 - y0)) // 2
        if slack_x < 0 or slack_y < 0:
            raise CusepError(f"internal error: the {code} figure does not fit its cell")
        jx = int(rng.integers(-min(8, slack_x), min(8, slack_x) + 1))
        jy = int(rng.integers(-min(6, slack_y), min(6, slack_y) + 1))
        ax = k * CELL_W + CELL_W // 2 - (x0 + x1) // 2 + jx
        ay = CELL_H // 2 - (y0 + y1) // 2 + jy
        box = (ax + x0 - MARGIN, ay + y0 - MARGIN, x1 - x0 + 2 * MARGIN, y1 - y0 + 2 * MARGIN)
        figures.append(Figure(code, (ax, ay), shapes, look.axis, look.travel, box,
                              float(rng.uniform(1.2, 2.2)), float(rng.uniform(0, 2 * np.pi))))
    return Scene(width, height, background, tuple(figures))


def boxes_json(scene: Scene) -> dict:
    """boxes.json content of a scene (pixel units, one player per figure, in player order)."""
    return {
        "units": "pixels",
        "players": [
            {"box": list(f.box), "instrument": f.code, "name": f"player{k}"}
            for k, f in enumerate(scene.figures, start=1)
        ],
    }


def _dump_boxes(data: dict) -> str:
    """boxes.json text: one player per line."""
    players = ",\n  ".join(json.dumps(p) for p in data["players"])
    return f'{{\n "units": {json.dumps(data["units"])},\n "players": [\n  {players}\n ]\n}}\n'


# --------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class Motion:
    """Per-frame motion of one player: arm position in [-1, 1] and loudness in [0, 1]."""

    arm: np.ndarray  # (frames,) float64
    loudness: np.ndarray  # (frames,) float64


def note_events(events: Sequence[tuple]) -> tuple[list[tuple[float, float, int]],
                                                  list[tuple[float, int]]]:
    """Notes (on, off, velocity) and CC11 changes (time, value) of cusep synth events.

    ``events``: (seconds, order, args) with args ``("note_on", pitch, vel)``,
    ``("note_off", pitch, 0)``, ``("control_change", 11, value)`` (others are ignored).
    """
    ordered = sorted(events, key=lambda e: (e[0], e[1]))
    open_notes: dict[int, list[tuple[float, int]]] = {}
    notes: list[tuple[float, float, int]] = []
    expression: list[tuple[float, int]] = []
    for t, _, args in ordered:
        kind = args[0]
        if kind == "note_on" and args[2] > 0:
            open_notes.setdefault(args[1], []).append((float(t), int(args[2])))
        elif kind in ("note_off", "note_on"):
            stack = open_notes.get(args[1])
            if stack:
                on, vel = stack.pop(0)
                notes.append((on, float(t), vel))
        elif kind == "control_change" and args[1] == 11:
            expression.append((float(t), int(args[2])))
    for pitch_notes in open_notes.values():  # never released: sound to the end
        notes.extend((on, math.inf, vel) for on, vel in pitch_notes)
    notes.sort()
    return notes, expression


def player_motion(events: Sequence[tuple], frames: int, fps: float = FPS) -> Motion:
    """Arm position and loudness of one player at frame times ``i / fps`` from its events."""
    notes, expression = note_events(events)
    times = np.arange(frames) / fps
    vel = np.zeros(frames)
    for on, off, v in notes:  # frames i with on <= i / fps < off
        i0 = max(int(math.ceil(on * fps - 1e-9)), 0)
        i1 = frames if math.isinf(off) else min(int(math.ceil(off * fps - 1e-9)), frames)
        if i1 > i0:
            vel[i0:i1] = np.maximum(vel[i0:i1], v / 127.0)
    cc = np.ones(frames)
    if expression:
        et = np.array([t for t, _ in expression])
        ev = np.array([v for _, v in expression]) / 127.0
        idx = np.searchsorted(et, times, side="right") - 1
        cc = np.where(idx >= 0, ev[np.clip(idx, 0, None)], 1.0)
    raw = vel * cc
    decay = math.exp(-1.0 / (fps * RELEASE_S))
    loud = np.empty(frames)
    level = 0.0
    for i in range(frames):
        level = max(raw[i], level * decay)
        if level < _LOUD_FLOOR:
            level = 0.0
        loud[i] = level
    onsets: list[float] = []
    for on, _, _ in notes:
        if not onsets or on - onsets[-1] >= MERGE_S:
            onsets.append(on)
    arm = np.full(frames, -1.0)
    start = -1.0  # where the arm stands when the swing of onset k begins
    for k, on in enumerate(onsets):
        nxt = onsets[k + 1] if k + 1 < len(onsets) else math.inf
        target = 1.0 if k % 2 == 0 else -1.0
        i0 = max(int(math.ceil(on * fps - 1e-9)), 0)
        i1 = frames if math.isinf(nxt) else min(int(math.ceil(nxt * fps - 1e-9)), frames)
        if i1 > i0:
            u = np.clip((times[i0:i1] - on) / SWING_S, 0.0, 1.0)
            ease = u * u * (3 - 2 * u)
            arm[i0:i1] = start + (target - start) * ease
        u = min((nxt - on) / SWING_S, 1.0)
        start = start + (target - start) * u * u * (3 - 2 * u)
    return Motion(arm, loud)


# --------------------------------------------------------------------------- frames


def frame_count(duration: float, fps: float = FPS) -> int:
    """Frames that cover ``duration`` seconds (the last frame may run past the audio)."""
    return max(1, int(math.ceil(duration * fps - 1e-6)))


def iter_frames(scene: Scene, motions: Sequence[Motion], frames: int,
                fps: float = FPS) -> Iterator[np.ndarray]:
    """(height, width, 3) uint8 RGB frames; the same buffer is reused: copy to keep one."""
    if len(motions) != len(scene.figures):
        raise ValueError("one motion per figure is needed")
    frame = np.empty_like(scene.background)
    for i in range(frames):
        frame[:] = scene.background
        t = i / fps
        for fig, mot in zip(scene.figures, motions, strict=True):
            loud = float(mot.loudness[i])
            sway = int(round(SWAY_PX * loud * math.sin(2 * math.pi * t / fig.sway_period
                                                         + fig.sway_phase)))
            arm = int(round(fig.travel * float(mot.arm[i])))
            gain = 0.7 + 0.3 * loud
            ax, ay = fig.anchor
            for s in fig.shapes:
                x, y = ax + s.x + sway, ay + s.y
                colour = s.colour
                if s.role == "body":
                    colour = tuple(min(255, int(c * gain + 0.5)) for c in s.colour)
                elif s.role == "arm":
                    if fig.axis == "x":
                        x += arm
                    else:
                        y += arm
                h, w = s.mask.shape
                frame[y:y + h, x:x + w][s.mask] = colour
        yield frame


# --------------------------------------------------------------------------- encoding


def _aac_rate(sample_rate: int) -> int:
    if sample_rate in AAC_RATES:
        return sample_rate
    return 48000 if sample_rate % 8000 == 0 else 44100


def write_video(path: str | Path, frames: Iterator[np.ndarray], n_frames: int, width: int,
                height: int, audio: np.ndarray | None, sample_rate: int,
                fps: int = FPS) -> int:
    """Encode RGB ``frames`` (h264, yuv420p, crf 28) with mono ``audio`` (float, AAC) to mp4.

    No B-frames, so no motion leaks into frames shown before it happens. Audio is interleaved
    with the frames in time; returns the audio rate used (the input rate when AAC supports it,
    else 44100 or 48000 after resampling).
    """
    import av

    rate = sample_rate
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        rate = _aac_rate(sample_rate)
        if rate != sample_rate:
            from ..audio import resample

            audio = resample(audio, sample_rate, rate).astype(np.float32)
    out = av.open(str(path), "w")
    try:
        video = out.add_stream("libx264", rate=fps,
                               options={"crf": "28", "preset": "veryfast", "bf": "0"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio is not None:
            sound = out.add_stream("aac", rate=rate)
            sound.layout = "mono"
            sound.bit_rate = 64000 if rate <= 24000 else 96000
        pos, n = 0, 0 if audio is None else len(audio)
        tb = Fraction(1, rate)
        for i, img in enumerate(frames):
            if i >= n_frames:
                break
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            for p in video.encode(vf):
                out.mux(p)
            if sound is not None:
                upto = n if i == n_frames - 1 else min(n, int(round((i + 1) * rate / fps)))
                while pos < upto:
                    m = min(1024, upto - pos)
                    af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, pos:pos + m]),
                                                    format="fltp", layout="mono")
                    af.sample_rate, af.pts, af.time_base = rate, pos, tb
                    for p in sound.encode(af):
                        out.mux(p)
                    pos += m
        for p in video.encode(None):
            out.mux(p)
        if sound is not None:
            for p in sound.encode(None):
                out.mux(p)
    finally:
        out.close()
    return rate


def _check_audio(path: Path, seconds: float) -> None:
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            raise CusepError(f"internal error: {path.name} has no audio stream")
        s = c.streams.audio[0]
        got = float(s.duration * s.time_base) if s.duration is not None else None
    if got is None or abs(got - seconds) > 0.05:
        raise CusepError(f"internal error: audio of {path.name} lasts {got} s, not {seconds:.3f} s")


def render_piece_video(folder: str | Path, piece: str, codes: Sequence[str],
                       events: Sequence[Sequence[tuple]], mix: np.ndarray, sample_rate: int,
                       seed: int, fps: int = FPS) -> dict:
    """Write ``Vid_<piece>.mp4`` and ``boxes.json`` into ``folder``; return the record entry.

    ``codes`` and ``events`` are per player in ``AuSep_<k>_`` order (events as
    :func:`note_events` reads them, seconds from the start of the audio); ``mix`` is the mono
    mix (float in [-1, 1] or int16-scaled integers).
    """
    folder = Path(folder)
    mix = np.asarray(mix)
    audio = mix.astype(np.float32) / 32768.0 if mix.dtype.kind in "iu" else mix.astype(np.float32)
    duration = len(audio) / sample_rate
    scene = make_scene(codes, seed)
    n = frame_count(duration, fps)
    motions = [player_motion(ev, n, fps) for ev in events]
    name = f"Vid_{piece}.mp4"
    rate = write_video(folder / name, iter_frames(scene, motions, n, fps), n, scene.width,
                       scene.height, audio, sample_rate, fps)
    _check_audio(folder / name, duration)
    (folder / BOXES_FILE).write_text(_dump_boxes(boxes_json(scene)))
    return {"file": name, "boxes": BOXES_FILE, "fps": fps, "width": scene.width,
            "height": scene.height, "frames": n, "audio_rate": rate}


__all__ = ["BOXES_FILE", "FPS", "Figure", "Motion", "Scene", "boxes_json", "frame_count",
           "iter_frames", "make_scene", "note_events", "player_motion", "render_piece_video",
           "write_video"]
