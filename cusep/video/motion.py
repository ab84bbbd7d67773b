"""Motion: per-player motion energy inside each box over a video (what matches players to
stems, :mod:`cusep.players`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CusepError
from .boxes import TIME_EPS, Player, check_fit
from .frames import decode_frames, frame_rate, open_stream

if TYPE_CHECKING:
    import av

_MOTION_SIDE = 320  # motion_energy downscales so that the longer side is at most this


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
    frame_rate = (len(times) - 1) / max(times[-1] - times[0], TIME_EPS)
    if rate >= frame_rate:
        rows = [np.interp(grid, times, e) for e in energy]
    else:  # piecewise-constant energy (frame k holds until frame k + 1): integrate, difference
        edges = np.append(times, times[-1] + 1.0 / frame_rate)
        lo = np.clip(grid - 0.5 / rate, edges[0], edges[-1])
        hi = np.clip(grid + 0.5 / rate, edges[0], edges[-1])
        span = np.maximum(hi - lo, TIME_EPS)
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
    container, stream, path = open_stream(path)
    with container:
        width, height = stream.codec_context.width, stream.codec_context.height
        check_fit(players, width, height)
        k = max(1, math.ceil(max(width, height) / _MOTION_SIDE))  # downscale factor
        sw, sh = max(1, width // k), max(1, height // k)
        boxes = [_scaled_box(p.box, 1 / k, 1 / k, sw, sh) for p in players]
        times: list[float] = []
        rows: list[list[float]] = []
        prev: np.ndarray | None = None
        for ft, frame in decode_frames(container, stream, path):
            grey = _small_grey(frame, k, sw, sh)
            if prev is not None:
                diff = np.abs(grey - prev)
                rows.append([float(diff[y0:y1, x0:x1].mean()) for x0, y0, x1, y1 in boxes])
            prev = grey
            times.append(ft)
        fps = frame_rate(stream)
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
