"""Overlay: a video re-encoded with each player's box outlined and labelled (drawn with numpy on
the yuv420p planes), written atomically."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import atomic_path
from ..errors import CusepError
from .boxes import Player, check_fit
from .frames import open_stream, start_seconds, undecodable

if TYPE_CHECKING:
    import av

# Overlay colours, one per player (cycled): distinct on dark and bright footage.
_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)
# Audio codecs the mp4 / mov muxers take as they are; others are re-encoded to AAC.
_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


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
    container, stream, src = open_stream(src)
    with container:
        if dst.exists() and dst.resolve() == src.resolve():
            raise CusepError(f"{dst}: is the input video; give another output file name")
        if dst.is_dir():
            raise CusepError(f"{dst}: is a folder; give a file name for the output video")
        width, height = stream.codec_context.width, stream.codec_context.height
        check_fit(players, width, height)
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
        try:
            with atomic_path(dst, suffix=f".tmp{dst.suffix}") as tmp:  # the muxer reads suffixes
                try:
                    output = av.open(str(tmp), "w")
                except ValueError as e:
                    raise CusepError(f"{dst}: cannot write {dst.suffix or 'extension-less'} "
                                     "videos; name the file .mp4 or .mkv") from e
                with output:
                    _overlay_streams(container, stream, audio_in, output, src, drawn,
                                     (out_w, out_h), thickness)
        except BaseException as e:
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
    start = start_seconds(stream)
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
        raise undecodable(src, f"corrupt data: {e}") from e


def _decoded(packet: av.Packet, src: Path) -> list:
    """The frames of one packet, corrupt data raised as CusepError."""
    import av

    try:
        return packet.decode()
    except av.FFmpegError as e:
        raise undecodable(src, f"corrupt data: {e}") from e
