"""Video: stream facts, players' boxes (boxes.json), frames, player crops, motion, overlays.

Frames are uint8 RGB arrays ``(N, H, W, 3)``; a player's box is ``(x, y, w, h)`` in pixels of
the video frame, ``(x, y)`` its top-left corner. Times are seconds from the first frame.
Decoding and encoding go through PyAV (FFmpeg). Problems caused by the user's files raise
:class:`~cusep.errors.CusepError` with one line naming the file (and the entry), the problem
and the fix.

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
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from cusep.audio import _NON_MEDIA_DEMUXERS, _check_input, _open_av
from cusep.errors import CusepError
from cusep.instruments import InstrumentError, parse_instrument

if TYPE_CHECKING:
    import av

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Player",
    "VideoInfo",
    "crop_players",
    "load_boxes",
    "normalise",
    "motion_energy",
    "parse_boxes",
    "read_frames",
    "resize_square",
    "video_info",
    "write_overlay",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_UNITS = ("pixels", "relative")
_TOP_KEYS = ("units", "players")
_PLAYER_KEYS = ("box", "instrument", "name", "start", "end")
_EDGE_TOLERANCE = 0.02  # a box may stick out of the frame by this fraction of W / H (clipped)
_MAX_OVERLAP = 0.25  # of the smaller box's area
_SEEK_AHEAD = 5.0  # seconds: read_frames seeks instead of decoding up to a time this far ahead
_MOTION_SIDE = 320  # motion_energy downscales so that the longer side is at most this
_TIME_EPS = 1e-6
# Overlay colours, one per player (cycled): distinct on dark and bright footage.
_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)
# Audio codecs the mp4 / mov muxers take as they are; others are re-encoded to AAC.
_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


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
        return (t >= self.span[0] - _TIME_EPS) & (t <= self.span[1] + _TIME_EPS)


@dataclass(frozen=True)
class VideoInfo:
    """A video file's first video stream, from its header (frames: stated, else estimated)."""

    width: int
    height: int
    fps: float
    duration: float  # seconds
    frames: int
    has_audio: bool


# ----------------------------------------------------------------------------- opening


def _undecodable(path: Path, reason: str) -> CusepError:
    return CusepError(
        f"{path}: cannot be decoded as video ({reason}); check that it is an intact video file"
    )


def _open_video(path: str | Path) -> tuple[av.container.InputContainer, av.VideoStream, Path]:
    """Open ``path`` and return (container, its first video stream, path); the caller closes."""

    path = _check_input(path, "video")
    container = _open_av(path, _undecodable)
    if container.format.name in _NON_MEDIA_DEMUXERS or not container.streams.video:
        has_audio = bool(container.streams.audio)
        container.close()
        if has_audio:
            raise CusepError(
                f"{path}: has no video stream (audio only); give the video recording, "
                "or separate this file without boxes"
            )
        raise CusepError(f"{path}: is not a video file; give a file such as .mp4, .mkv or .mov")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream, path


def _start_seconds(stream: av.VideoStream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _fps(stream: av.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def video_info(path: str | Path) -> VideoInfo:
    """Size, frame rate, duration and frame count of the first video stream of ``path``.

    Read from the header: the frame count is the stated one, else ``round(duration * fps)``.
    Raises CusepError for a missing, empty, corrupt or video-less file.
    """
    container, stream, path = _open_video(path)
    with container:
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise _undecodable(path, "the video stream states no frame size")
        fps = _fps(stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            import av

            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames = int(stream.frames or 0)
        if frames <= 0 and fps > 0:
            frames = round(duration * fps)
        if fps <= 0 and duration > 0 and frames > 0:
            fps = frames / duration
        if duration <= 0 and fps > 0 and frames > 0:
            duration = frames / fps
        return VideoInfo(int(width), int(height), float(fps), float(duration), int(frames),
                         bool(container.streams.audio))


# ----------------------------------------------------------------------------- boxes.json


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


# ----------------------------------------------------------------------------- frames


def _decode(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path,
    seek: float | None = None,
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decode ``stream`` from the start, or from the keyframe at or before ``seek`` seconds:
    yields (time from the stream start in seconds, frame)."""
    import av

    start = _start_seconds(stream)
    if seek is not None:
        target = (stream.start_time or 0) + int(seek / stream.time_base)
        try:
            container.seek(max(0, target), stream=stream, backward=True)
        except av.FFmpegError as e:
            raise _undecodable(path, f"seeking failed: {e}") from e
    fps = _fps(stream) or 25.0
    index = 0
    try:
        for frame in container.decode(stream):
            if frame.pts is not None and frame.time_base is not None:
                t = float(frame.pts * frame.time_base) - start
            else:
                t = index / fps
            index += 1
            yield t, frame
    except av.FFmpegError as e:
        raise _undecodable(path, f"corrupt video data: {e}") from e


def read_frames(path: str | Path, times: Sequence[float]) -> np.ndarray:
    """The frame shown at each of ``times`` (seconds; clamped to the video) -> (N, H, W, 3)
    uint8 RGB, in the order of ``times``.

    One pass: times are visited in sorted order while decoding forward; the decoder seeks only
    to a time more than a few seconds ahead of the current position.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if np.isnan(t).any():
        raise ValueError("times must not contain NaN")
    container, stream, path = _open_video(path)
    with container:
        width, height = stream.codec_context.width, stream.codec_context.height
        out = np.empty((len(t), height, width, 3), dtype=np.uint8)
        if not len(t):
            return out
        order = np.argsort(t, kind="stable")
        todo = t[order]
        i = 0  # next position in ``todo``
        prev: tuple[av.VideoFrame, list[np.ndarray]] | None = None  # last frame, its pixels
        decoded = False

        def pixels(entry: tuple[av.VideoFrame, list[np.ndarray]]) -> np.ndarray:
            if not entry[1]:  # converted once, however many times ask for it
                entry[1].append(entry[0].to_ndarray(format="rgb24", width=width, height=height))
            return entry[1][0]

        seek = float(todo[0]) if todo[0] > _SEEK_AHEAD else None
        may_seek = True
        while True:
            restart = None
            got = False  # a frame decoded in this pass
            for ft, frame in _decode(container, stream, path, seek):
                if not got and seek is not None and may_seek and ft > todo[i] + _TIME_EPS:
                    restart, may_seek = 0.0, False  # landed past the target: from the start
                    break
                got = decoded = True
                while i < len(todo) and todo[i] < ft - _TIME_EPS:
                    # the frame shown at todo[i] is the previous one (or this one if none yet)
                    out[order[i]] = pixels(prev if prev is not None else (frame, []))
                    i += 1
                if i == len(todo):
                    break
                prev = (frame, [])
                if may_seek and todo[i] - ft > _SEEK_AHEAD and todo[i] > (seek or 0.0):
                    restart = float(todo[i])
                    break
            if restart is None and not got and seek is not None and may_seek:
                restart, may_seek = 0.0, False  # the seek found nothing: from the start
            if restart is None:
                break
            seek, prev = restart, None
        if not decoded:
            raise CusepError(f"{path}: contains no video frames; give a video with pictures")
        if prev is None and i < len(todo):
            raise _undecodable(path, "seeking lost the frames")
        while i < len(todo):  # past the last frame: the last frame stays on screen
            out[order[i]] = pixels(prev)
            i += 1
    return out


def _check_fit(players: Sequence[Player], width: int, height: int) -> None:
    """ValueError unless every player's box lies inside a ``width`` x ``height`` frame."""
    for player in players:
        x, y, w, h = player.box
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
            raise ValueError(
                f"player {player.index}: box {player.box} does not fit the {width}x{height} "
                "frames; resolve the boxes against this video's size"
            )


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 or float images (N, 3, H, W) in 0..255 -> float32 (N, 3, size, size) in 0..255,
    bilinear and antialiased, aspect not kept."""
    x = images.float()
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def normalise(crops: torch.Tensor) -> torch.Tensor:
    """Crops (..., 3, S, S) in 0..255 (uint8 or float) -> float32 normalised with the ImageNet
    mean and std on [0, 1] RGB (what the backbones expect)."""
    mean = torch.tensor(IMAGENET_MEAN, device=crops.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=crops.device).view(3, 1, 1)
    return (crops.float() / 255.0 - mean) / std


def crop_players(
    frames: np.ndarray, players: Sequence[Player], size: int = 224, normalised: bool = True
) -> torch.Tensor:
    """Each player's box cut from ``frames`` (N, H, W, 3) uint8 RGB and resized to ``size`` x
    ``size`` (:func:`resize_square`) -> (N, P, 3, size, size): float32 ImageNet-normalised
    (:func:`normalise`), or uint8 with ``normalised=False`` (compact caches)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (N, H, W, 3), not {frames.dtype} {frames.shape}")
    n, height, width, _ = frames.shape
    out = torch.empty((n, len(players), 3, size, size),
                      dtype=torch.float32 if normalised else torch.uint8)
    _check_fit(players, width, height)
    if n == 0:
        return out
    for j, player in enumerate(players):
        x, y, w, h = player.box
        crop = torch.from_numpy(np.ascontiguousarray(frames[:, y:y + h, x:x + w]))
        crop = resize_square(crop.permute(0, 3, 1, 2), size)
        out[:, j] = normalise(crop) if normalised else crop.round().clamp(0, 255)
    return out


# ----------------------------------------------------------------------------- motion


_LUMA_FORMATS = frozenset({
    "gray", "nv12", "nv21", "yuv410p", "yuv411p", "yuv420p", "yuv422p", "yuv440p", "yuv444p",
    "yuvj420p", "yuvj422p", "yuvj440p", "yuvj444p",
})  # pixel formats whose first plane is 8-bit luma


def _small_grey(frame: av.VideoFrame, k: int, width: int, height: int) -> np.ndarray:
    """A frame's grey levels downscaled k times -> float32 (height, width), full range 0..255.

    Most videos are 8-bit YUV: their luma plane is read as it is (limited-range "TV" luma,
    16..235, is stretched to 0..255), and each k x k block is the mean of its k diagonal pixels
    (every row and column of the block is sampled, so thin lines still count), about 5x faster
    than swscale. Other formats go through swscale.
    """
    if frame.format.name not in _LUMA_FORMATS:
        return frame.to_ndarray(format="gray", width=width, height=height).astype(np.float32)
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    luma = luma[: height * k, : width * k]
    acc = np.zeros((height, width), np.float32)
    for i in range(k):
        acc += luma[i::k, i::k]
    full = frame.format.name.startswith("yuvj") or frame.format.name == "gray" \
        or frame.color_range == 2  # AVCOL_RANGE_JPEG
    return (acc - 16.0 * k) * (255.0 / (219.0 * k)) if not full else acc / k


def _scaled_box(
    box: tuple[int, int, int, int], sx: float, sy: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """A frame box -> (x0, y0, x1, y1) on the downscaled grid, at least one pixel."""
    x, y, w, h = box
    x0 = min(width - 1, max(0, math.floor(x * sx)))
    y0 = min(height - 1, max(0, math.floor(y * sy)))
    x1 = min(width, max(x0 + 1, math.ceil((x + w) * sx)))
    y1 = min(height, max(y0 + 1, math.ceil((y + h) * sy)))
    return x0, y0, x1, y1


def _resample_energy(
    times: np.ndarray, energy: np.ndarray, rate: float, duration: float
) -> tuple[np.ndarray, np.ndarray]:
    """Energy (P, T) at frame ``times`` -> a uniform ``rate`` grid over [0, duration): linear
    interpolation when ``rate`` is at least the frame rate, else the mean over each grid step."""
    n = max(1, math.ceil(duration * rate - 1e-9))
    grid = np.arange(n) / rate
    if len(times) < 2:
        return grid, np.repeat(energy[:, :1], n, axis=1)
    frame_rate = (len(times) - 1) / max(times[-1] - times[0], _TIME_EPS)
    if rate >= frame_rate:
        rows = [np.interp(grid, times, e) for e in energy]
    else:  # piecewise-constant energy (frame k holds until frame k + 1): integrate, difference
        edges = np.append(times, times[-1] + 1.0 / frame_rate)
        lo = np.clip(grid - 0.5 / rate, edges[0], edges[-1])
        hi = np.clip(grid + 0.5 / rate, edges[0], edges[-1])
        span = np.maximum(hi - lo, _TIME_EPS)
        rows = []
        for e in energy:
            cum = np.concatenate([[0.0], np.cumsum(e * np.diff(edges))])
            rows.append((np.interp(hi, edges, cum) - np.interp(lo, edges, cum)) / span)
    return grid, np.asarray(rows, dtype=np.float64).reshape(len(energy), n)


def motion_energy(
    path: str | Path, players: Sequence[Player], rate: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-player motion: the mean absolute grey-level difference between consecutive frames
    inside each box, in full-scale units (0 = still, 1 = black <-> white everywhere).

    Frames are streamed once, converted to grey at reduced size (longer side <= 320 px, boxes
    scaled alike). Returns ``times`` (T,) seconds and ``energy`` float32 (P, T): at each
    frame's time (frame 0 repeats frame 1's value) or, with ``rate``, on the uniform grid
    ``arange(T) / rate`` covering the video. Outside a player's span the energy is 0.
    """
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive number of frames per second, not {rate!r}")
    container, stream, path = _open_video(path)
    with container:
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_fit(players, width, height)
        k = max(1, math.ceil(max(width, height) / _MOTION_SIDE))  # downscale factor
        sw, sh = max(1, width // k), max(1, height // k)
        boxes = [_scaled_box(p.box, 1 / k, 1 / k, sw, sh) for p in players]
        times: list[float] = []
        rows: list[list[float]] = []
        prev: np.ndarray | None = None
        for ft, frame in _decode(container, stream, path):
            grey = _small_grey(frame, k, sw, sh)
            if prev is not None:
                diff = np.abs(grey - prev)
                rows.append([float(diff[y0:y1, x0:x1].mean()) for x0, y0, x1, y1 in boxes])
            prev = grey
            times.append(ft)
        fps = _fps(stream)
    if not times:
        raise CusepError(f"{path}: contains no video frames; give a video with pictures")
    t = np.asarray(times, dtype=np.float64)
    energy = np.zeros((len(players), len(t)), dtype=np.float64)
    if rows:
        energy[:, 1:] = np.asarray(rows, dtype=np.float64).T.reshape(len(players), -1) / 255.0
        energy[:, 0] = energy[:, 1]
    if rate is not None:
        step = 1.0 / fps if fps > 0 else (t[-1] - t[0]) / max(len(t) - 1, 1)
        t, energy = _resample_energy(t, energy, float(rate), float(t[-1] + step))
    for j, player in enumerate(players):
        energy[j, ~player.active(t)] = 0.0
    return t, energy.astype(np.float32)


# ----------------------------------------------------------------------------- overlay


def _label_patch(text: str, colour: tuple[int, int, int], font_size: int) -> np.ndarray:
    """``text`` in black on a bar of ``colour`` -> uint8 (h, w, 3)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    left, top, right, bottom = font.getbbox(text)
    pad = max(2, font_size // 5)
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), colour)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def _yuv(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> Y, Cb, Cr (..., 3) float, BT.601 limited range (what x264 and
    most players assume for yuv420p)."""
    x = np.asarray(rgb, np.float64) / 255.0
    m = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0],
                  [112.0, -93.786, -18.214]])
    return x @ m.T + np.array([16.0, 128.0, 128.0])


@dataclass(frozen=True)
class _Ink:
    """A player's colour and label patch, ready for yuv420p planes: the colour as (Y, U, V),
    the patch's luma (h, w) and its chroma (2, h/2, w/2), h and w even."""

    colour: tuple[int, int, int]
    luma: np.ndarray
    chroma: np.ndarray

    @classmethod
    def of(cls, colour: tuple[int, int, int], patch: np.ndarray) -> _Ink:
        h, w = patch.shape[:2]
        patch = np.pad(patch, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        yuv = _yuv(patch)
        chroma = yuv[..., 1:].reshape(patch.shape[0] // 2, 2, patch.shape[1] // 2, 2, 2)
        chroma = chroma.mean(axis=(1, 3)).transpose(2, 0, 1)
        ink = tuple(int(round(v)) for v in _yuv(np.array(colour)))
        return cls(ink, np.round(yuv[..., 0]).astype(np.uint8),  # type: ignore[arg-type]
                   np.round(chroma).astype(np.uint8))


def _planes(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame as yuv420p in one array (height * 3 / 2, width): Y, then U, then V, cropped to
    the even ``width`` x ``height``. A plane copy, no colour conversion, for yuv420p input."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    if (frame.width, frame.height) == (width, height):
        return frame.to_ndarray()
    parts = []
    for plane, (w, h) in zip(frame.planes, ((width, height), (width // 2, height // 2),
                                            (width // 2, height // 2)), strict=True):
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        parts.append(rows[:h, :w].ravel())
    return np.concatenate(parts).reshape(-1, width)


def _split(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of a :func:`_planes` array."""
    width = image.shape[1]
    height = image.shape[0] * 2 // 3
    flat = image.reshape(-1)
    n, q = width * height, (width // 2) * (height // 2)
    return (flat[:n].reshape(height, width), flat[n:n + q].reshape(height // 2, width // 2),
            flat[n + q:n + 2 * q].reshape(height // 2, width // 2))


def _draw(image: np.ndarray, box: tuple[int, int, int, int], ink: _Ink,
          thickness: int) -> None:
    """Draw the outline of ``box`` and its label into a yuv420p :func:`_planes` array in place
    (the chroma planes at half resolution, covering every chroma pixel the outline touches)."""
    planes = _split(image)
    height, width = planes[0].shape
    x, y, w, h = box
    x1, y1 = min(width, x + w), min(height, y + h)
    t = max(1, min(thickness, w // 2, h // 2))
    for k, (plane, value) in enumerate(zip(planes, ink.colour, strict=True)):
        if k == 0:
            bx, by, bx1, by1, bt, et = x, y, x1, y1, t, t
        else:  # chroma: half resolution, rounded outwards
            bx, by, bx1, by1 = x // 2, y // 2, -(-x1 // 2), -(-y1 // 2)
            bt, et = -(-(y % 2 + t) // 2), -(-(x % 2 + t) // 2)
        plane[by:by + bt, bx:bx1] = value
        plane[max(by, by1 - bt):by1, bx:bx1] = value
        plane[by:by1, bx:bx + et] = value
        plane[by:by1, max(bx, bx1 - et):bx1] = value
    ph, pw = ink.luma.shape
    px = x - x % 2
    py = y - ph if y - ph >= 0 else y  # above the box, or inside it at the top
    py -= py % 2
    pw, ph = min(pw, width - px), min(ph, height - py)
    pw, ph = pw - pw % 2, ph - ph % 2
    if pw > 0 and ph > 0:
        planes[0][py:py + ph, px:px + pw] = ink.luma[:ph, :pw]
        for plane, chroma in zip(planes[1:], ink.chroma, strict=True):
            plane[py // 2:(py + ph) // 2, px // 2:(px + pw) // 2] = chroma[:ph // 2, :pw // 2]


def _video_encoder() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_overlay(
    src: str | Path, dst: str | Path, players: Sequence[Player], labels: Mapping[int, str]
) -> None:
    """Write ``src`` to ``dst`` with each player's box outlined and labelled.

    ``labels`` maps Player.index to the text shown (default: the player's name and instrument
    code); a player with a span is drawn only inside it. The video is re-encoded (h264 via
    libx264, else mpeg4; odd sizes lose their last row / column), frame times kept; the audio
    track is copied (re-encoded to AAC where the container cannot hold it). Written to a temp
    file in ``dst``'s folder and renamed: on any error no file is left at ``dst``.
    """
    import av

    dst = Path(dst)
    container, stream, src = _open_video(src)
    with container:
        if dst.exists() and dst.resolve() == src.resolve():
            raise CusepError(f"{dst}: is the input video; give another output file name")
        if dst.is_dir():
            raise CusepError(f"{dst}: is a folder; give a file name for the output video")
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_fit(players, width, height)
        out_w, out_h = width - width % 2, height - height % 2
        font_size = max(10, min(out_w, out_h) // 24)
        thickness = max(2, min(out_w, out_h) // 240)
        drawn = []
        for k, player in enumerate(players):
            colour = _COLOURS[k % len(_COLOURS)]
            text = labels.get(player.index) or (
                f"{player.name} ({player.code})" if player.code else player.name
            )
            drawn.append((player, _Ink.of(colour, _label_patch(str(text), colour, font_size))))
        audio_in = container.streams.audio[0] if container.streams.audio else None
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CusepError(f"{dst}: cannot create output folder {dst.parent} ({e.strerror}); "
                             "choose a writable output folder") from e
        tmp = dst.parent / f".{dst.stem}.{uuid.uuid4().hex[:8]}.tmp{dst.suffix}"
        try:
            try:
                output = av.open(str(tmp), "w")
            except ValueError as e:
                raise CusepError(f"{dst}: cannot write {dst.suffix or 'extension-less'} videos; "
                                 "name the file .mp4 or .mkv") from e
            with output:
                _overlay_streams(container, stream, audio_in, output, src, drawn,
                                 (out_w, out_h), thickness)
            os.replace(tmp, dst)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and not isinstance(e, av.FFmpegError):
                raise CusepError(f"{dst}: cannot write ({e.strerror or e}); choose a writable "
                                 "output folder with free space") from e
            if isinstance(e, av.FFmpegError):
                raise CusepError(f"{dst}: writing the video failed ({e}); try an .mp4 or .mkv "
                                 "output name") from e
            raise


def _overlay_streams(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    audio_in: av.AudioStream | None,
    output: av.container.OutputContainer,
    src: Path,
    drawn: list[tuple[Player, _Ink]],
    size: tuple[int, int],
    thickness: int,
) -> None:
    """Demux ``container`` once: video decoded, drawn on (numpy on the yuv420p planes: no
    colour conversion either way) and encoded with x264 preset ultrafast; audio copied or
    re-encoded to AAC. Both go to ``output``."""
    import av

    out_w, out_h = size
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    video_out = output.add_stream(_video_encoder(), rate=rate)
    video_out.width, video_out.height, video_out.pix_fmt = out_w, out_h, "yuv420p"
    # Keep the source's frame times (mpeg4 takes time-base denominators up to 65535 only).
    time_base = stream.time_base if stream.time_base.denominator <= 65535 else Fraction(1, 60000)
    video_out.codec_context.time_base = time_base
    if video_out.codec_context.name == "libx264":
        video_out.codec_context.options = {"crf": "20", "preset": "ultrafast"}
    else:
        video_out.codec_context.bit_rate = max(1_000_000, out_w * out_h * 6)
    audio_out = None
    resampler = None
    if audio_in is not None:
        mp4_like = any(name in output.format.name.split(",") for name in ("mp4", "mov"))
        if not mp4_like or audio_in.codec_context.name in _MP4_AUDIO:
            audio_out = output.add_stream_from_template(audio_in)
        else:  # e.g. PCM: mp4 cannot hold it
            sample_rate = audio_in.codec_context.sample_rate or 44100
            audio_out = output.add_stream("aac", rate=sample_rate)
            audio_out.layout = "stereo" if audio_in.codec_context.layout.nb_channels > 1 else "mono"
            resampler = av.AudioResampler(format="fltp", layout=audio_out.layout.name,
                                          rate=sample_rate, frame_size=1024)
    start = _start_seconds(stream)
    last_pts: int | None = None
    streams = [stream] + ([audio_in] if audio_in is not None else [])
    for packet in _demux(container, streams, src):
        if packet.stream is stream:
            for frame in _decoded(packet, src):
                t = float(frame.time) - start if frame.pts is not None else None
                image = _planes(frame, out_w, out_h)
                for player, ink in drawn:
                    if t is None or player.active(np.asarray(t)):
                        _draw(image, player.box, ink, thickness)
                new = av.VideoFrame.from_ndarray(image, format="yuv420p")
                pts = None if frame.pts is None else round(frame.pts * frame.time_base
                                                           / time_base)
                if pts is None or (last_pts is not None and pts <= last_pts):
                    pts = 0 if last_pts is None else last_pts + 1
                new.pts, new.time_base, last_pts = pts, time_base, pts
                output.mux(video_out.encode(new))
        elif audio_out is not None and resampler is None:
            if packet.dts is not None:  # not the demuxer's empty flush packet
                packet.stream = audio_out
                output.mux(packet)
        elif audio_out is not None:
            for frame in _decoded(packet, src):
                for chunk in resampler.resample(frame):
                    output.mux(audio_out.encode(chunk))
    output.mux(video_out.encode(None))
    if resampler is not None:
        for chunk in resampler.resample(None):
            output.mux(audio_out.encode(chunk))
        output.mux(audio_out.encode(None))


def _demux(
    container: av.container.InputContainer, streams: list, src: Path
) -> Iterator[av.Packet]:
    """``container.demux(*streams)``, corrupt data raised as CusepError."""
    import av

    try:
        yield from container.demux(*streams)
    except av.FFmpegError as e:
        raise _undecodable(src, f"corrupt data: {e}") from e


def _decoded(packet: av.Packet, src: Path) -> list:
    """The frames of one packet, corrupt data raised as CusepError."""
    import av

    try:
        return packet.decode()
    except av.FFmpegError as e:
        raise _undecodable(src, f"corrupt data: {e}") from e
