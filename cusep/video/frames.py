"""Video frames: stream facts, decoding the frames shown at given times, player crops, and the
crops a visual model sees for each window (:func:`frame_provider`).

Frames are uint8 RGB arrays ``(N, H, W, 3)``; times are seconds from the first frame. Decoding
goes through PyAV (FFmpeg); problems caused by the user's files raise
:class:`~cusep.errors.CusepError` with one line naming the file, the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import NON_MEDIA_DEMUXERS, check_input, open_av
from ..errors import CusepError
from .boxes import TIME_EPS, Player, check_fit

if TYPE_CHECKING:
    import av

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_SEEK_AHEAD = 5.0  # seconds: read_frames seeks instead of decoding up to a time this far ahead

FrameProvider = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]
"""Window start times in seconds (B,) -> (crops (B, P, F, 3, S, S) normalised, present (B, P))."""


@dataclass(frozen=True)
class VideoInfo:
    """A video file's first video stream, from its header (frames: stated, else estimated)."""

    width: int
    height: int
    fps: float
    duration: float  # seconds
    frames: int
    has_audio: bool


def undecodable(path: Path, reason: str) -> CusepError:
    return CusepError(
        f"{path}: cannot be decoded as video ({reason}); check that it is an intact video file"
    )


def open_stream(path: str | Path) -> tuple[av.container.InputContainer, av.VideoStream, Path]:
    """Open ``path`` and return (container, its first video stream, path); the caller closes."""

    path = check_input(path, "video")
    container = open_av(path, undecodable)
    if container.format.name in NON_MEDIA_DEMUXERS or not container.streams.video:
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


def start_seconds(stream: av.VideoStream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def frame_rate(stream: av.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def video_info(path: str | Path) -> VideoInfo:
    """Size, frame rate, duration and frame count of the first video stream of ``path``.

    Read from the header: the frame count is the stated one, else ``round(duration * fps)``.
    Raises CusepError for a missing, empty, corrupt or video-less file.
    """
    container, stream, path = open_stream(path)
    with container:
        width, height = stream.codec_context.width, stream.codec_context.height
        if width <= 0 or height <= 0:
            raise undecodable(path, "the video stream states no frame size")
        fps = frame_rate(stream)
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


def decode_frames(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path,
    seek: float | None = None,
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decode ``stream`` from the start, or from the keyframe at or before ``seek`` seconds:
    yields (time from the stream start in seconds, frame)."""
    import av

    start = start_seconds(stream)
    if seek is not None:
        target = (stream.start_time or 0) + int(seek / stream.time_base)
        try:
            container.seek(max(0, target), stream=stream, backward=True)
        except av.FFmpegError as e:
            raise undecodable(path, f"seeking failed: {e}") from e
    fps = frame_rate(stream) or 25.0
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
        raise undecodable(path, f"corrupt video data: {e}") from e


def read_frames(path: str | Path, times: Sequence[float]) -> np.ndarray:
    """The frame shown at each of ``times`` (seconds; clamped to the video) -> (N, H, W, 3)
    uint8 RGB, in the order of ``times``.

    One pass: times are visited in sorted order while decoding forward; the decoder seeks only
    to a time more than a few seconds ahead of the current position.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if np.isnan(t).any():
        raise ValueError("times must not contain NaN")
    container, stream, path = open_stream(path)
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
            for ft, frame in decode_frames(container, stream, path, seek):
                if not got and seek is not None and may_seek and ft > todo[i] + TIME_EPS:
                    restart, may_seek = 0.0, False  # landed past the target: from the start
                    break
                got = decoded = True
                while i < len(todo) and todo[i] < ft - TIME_EPS:
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
            raise undecodable(path, "seeking lost the frames")
        while i < len(todo):  # past the last frame: the last frame stays on screen
            out[order[i]] = pixels(prev)
            i += 1
    return out


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
    check_fit(players, width, height)
    if n == 0:
        return out
    for j, player in enumerate(players):
        x, y, w, h = player.box
        crop = torch.from_numpy(np.ascontiguousarray(frames[:, y:y + h, x:x + w]))
        crop = resize_square(crop.permute(0, 3, 1, 2), size)
        out[:, j] = normalise(crop) if normalised else crop.round().clamp(0, 255)
    return out


class FrameSampling(Protocol):
    """What :func:`frame_provider` needs of a visual config (:class:`cusep.visual.VisualConfig`)."""

    crop_size: int

    def frame_offsets(self) -> tuple[float, ...]: ...


def frame_provider(video: str | Path, players: Sequence[Player],
                   config: FrameSampling) -> FrameProvider:
    """The crops a visual model sees for windows starting at given times, read from ``video``.

    A player counts as present in a window when any of its frame times lies in its span.
    """
    offsets = np.asarray(config.frame_offsets())

    def provide(starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        times = np.asarray(starts, dtype=np.float64)[:, None] + offsets[None]  # (B, F)
        crops = crop_players(read_frames(video, times.reshape(-1)), players, config.crop_size)
        crops = crops.reshape(*times.shape, *crops.shape[1:]).transpose(1, 2)
        present = np.stack([p.active(times).any(axis=1) for p in players], axis=1)
        return crops, torch.from_numpy(present)

    return provide
