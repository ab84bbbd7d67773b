"""Audio I/O: decode audio and video files, write stems atomically, mono mix-down, resampling.

Arrays are float32 ``(channels, samples)`` in [-1, 1]. soundfile (libsndfile) reads what it
can (wav, flac, ogg, mp3, aiff, ...); PyAV (FFmpeg) reads the audio track of video files and
containers (mp4, mov, mkv, webm, m4a, aac, opus, ...) and anything soundfile refuses. Problems
caused by the user's files raise :class:`~cusep.errors.CusepError` with one line naming the
file, the problem and the fix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np
import soundfile as sf
import torch

from .atomic import commit, temp_beside
from .errors import CusepError

if TYPE_CHECKING:
    import av

__all__ = [
    "AUDIO_EXTENSIONS",
    "FORMAT_EXTENSIONS",
    "AudioInfo",
    "AudioSource",
    "AudioWriter",
    "NON_MEDIA_DEMUXERS",
    "check_input",
    "open_av",
    "StreamResampler",
    "info",
    "open_audio",
    "read_audio",
    "resample",
    "to_mono",
    "write_audio",
]

log = logging.getLogger(__name__)

# Suffixes libsndfile decodes; tried with soundfile first (PyAV is the fallback).
SOUNDFILE_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".aifc", ".w64",
     ".rf64", ".caf", ".au"}
)
#: Suffixes treated as audio or video inputs when scanning folders.
AUDIO_EXTENSIONS: frozenset[str] = SOUNDFILE_EXTENSIONS | frozenset(
    {".opus", ".m4a", ".aac", ".mka", ".wma", ".mp4", ".m4v", ".mov", ".mkv", ".webm",
     ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".3gp"}
)

#: Output format -> file extension (without the dot). "wav" is an alias of "wav16".
FORMAT_EXTENSIONS: dict[str, str] = {
    "wav16": "wav",
    "wav24": "wav",
    "float32": "wav",
    "flac": "flac",
    "flac24": "flac",
    "mp3": "mp3",
    "wav": "wav",
}
# fmt -> (libsndfile container, subtype, integer bits or None for float samples).
_FORMATS: dict[str, tuple[str, str, int | None]] = {
    "wav16": ("WAV", "PCM_16", 16),
    "wav24": ("WAV", "PCM_24", 24),
    "float32": ("WAV", "FLOAT", None),
    "flac": ("FLAC", "PCM_16", 16),
    "flac24": ("FLAC", "PCM_24", 24),
    "mp3": ("MP3", "MPEG_LAYER_III", None),
}
_ALIASES = {"wav": "wav16"}
_LOSSY = frozenset({"mp3"})  # cannot be read back as written: encoded once, at the end
#: Constant bitrates (kbit/s) ``--format mp3`` can be asked for; 320 is the default.
MP3_BITRATES = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320)

# FFmpeg demuxers of raw elementary streams: their stated duration is a bitrate estimate.
_RAW_DEMUXERS = frozenset({"aac", "mp3", "ac3", "eac3", "dts", "truehd", "loas"})
# FFmpeg demuxers that open almost anything (text or bytes as ANSI / binary art), never sound.
NON_MEDIA_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf"})

# Resampling: Kaiser-windowed sinc with the "kaiser_best" parameters of resampy/librosa.
_LOWPASS_WIDTH = 64
_ROLLOFF = 0.9475937167399596
_BETA = 14.769656459379492
_MAX_KERNEL = 4_000_000  # above this many filter taps (coprime rates) resample via FFT

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header (PyAV files without a stated stream duration:
    the container's estimate, which can differ from :func:`read_audio` by a codec frame)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int  # samples per channel
    duration: float  # seconds


# ----------------------------------------------------------------------------- reading


def check_input(path: str | Path, kind: str = "audio") -> Path:
    """An existing, readable, non-empty file, else CusepError. ``kind``: audio or video."""
    path = Path(path)
    article = "an" if kind == "audio" else "a"
    wanted = "audio or video" if kind == "audio" else kind
    if not path.exists():
        raise CusepError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise CusepError(f"{path}: is a folder, not {article} {kind} file; give a file inside it")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CusepError(f"{path}: cannot be read ({e.strerror}); check its permissions") from e
    if size == 0:
        raise CusepError(f"{path}: is empty (0 bytes); give a non-empty {wanted} file")
    return path


def _undecodable(path: Path, reason: str) -> CusepError:
    return CusepError(
        f"{path}: cannot be decoded as audio ({reason}); "
        "check that it is an intact audio or video file"
    )


def open_av(path: Path, undecodable: Callable[[Path, str], CusepError] = _undecodable,
             ) -> av.container.InputContainer:
    """av.open with one-line errors (``undecodable(path, reason)`` for corrupt files)."""
    import av  # PyAV is only needed for containers: imported on first use

    try:
        return av.open(str(path), metadata_errors="ignore")
    except PermissionError as e:
        raise CusepError(f"{path}: cannot be read ({e.strerror}); check its permissions") from e
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise undecodable(path, "unknown or corrupt format") from e


def _audio_stream(container: av.container.InputContainer, path: Path) -> av.AudioStream:
    if container.streams.audio:
        return container.streams.audio[0]
    if container.format.name in NON_MEDIA_DEMUXERS or not container.streams.video:
        raise CusepError(
            f"{path}: is not an audio or video file; give a file such as .wav, .flac or .mp4"
        )
    raise CusepError(
        f"{path}: has no audio track; give a recording with sound, or the audio file recorded "
        "with this video"
    )


def _stated_frames(
    container: av.container.InputContainer, stream: av.AudioStream, sample_rate: int
) -> int | None:
    """Samples per channel the container states for the stream (None when only estimated)."""
    if stream.duration is None or container.format.name in _RAW_DEMUXERS:
        return None
    return round(stream.duration * stream.time_base * sample_rate)


def _frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame -> float32 (channels, samples)."""
    x = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        x = x.reshape(-1, channels).T
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    if x.dtype.kind == "u":  # u8: offset binary
        return ((x.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    return (x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))).astype(np.float32)


class AudioSource:
    """An audio file opened for reading in blocks: its rate and channels, and its samples as
    consecutive float32 ``(channels, n)`` blocks (:meth:`blocks`), decoded on demand so memory
    stays bounded whatever the file's length. Made by :func:`open_audio`.

    ``frames`` is the length the file states (exact for libsndfile formats; for PyAV files an
    estimate, or None when nothing is stated): the blocks are the truth.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, frames: int | None,
                 backend: Literal["soundfile", "av"]) -> None:
        self.path, self.sample_rate, self.channels = path, sample_rate, channels
        self.frames, self._backend = frames, backend

    def blocks(self, size: int = 1 << 16, start: int = 0,
               stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield the samples ``start:stop`` (frames; None: to the end) as blocks (channels, n),
        n <= size. Raises CusepError when there is no sample in that span (or none at all)."""
        if size < 1 or start < 0 or (stop is not None and stop <= start):
            raise ValueError(f"bad block span: size={size}, start={start}, stop={stop}")
        read = self._sf_blocks if self._backend == "soundfile" else self._av_blocks
        got = 0
        for block in read(size, start, stop):
            if block.shape[1]:
                got += block.shape[1]
                yield block
        if got == 0:
            where = f" after {start / self.sample_rate:.3f} s" if start else ""
            raise CusepError(f"{self.path}: contains no audio samples{where}; give a file "
                             "with sound in it" + (" or an earlier start" if start else ""))

    def _sf_blocks(self, size: int, start: int, stop: int | None) -> Iterator[np.ndarray]:
        try:
            for b in sf.blocks(str(self.path), blocksize=size, dtype="float32",
                               always_2d=True, start=start, stop=stop):
                yield np.ascontiguousarray(b.T)
        except (sf.SoundFileError, RuntimeError) as e:
            raise _undecodable(self.path, f"corrupt audio data: {e}") from e

    def _av_blocks(self, size: int, start: int, stop: int | None) -> Iterator[np.ndarray]:
        import av

        path = self.path
        # Codecs such as AAC pad the last frame (and some decoders keep encoder priming):
        # the container's stated duration is the length of the signal.
        end = self.frames if self.frames else None
        if stop is not None:
            end = stop if end is None else min(end, stop)
        pos, pending, held = 0, [], 0  # pos: absolute frame index after the decoded frames
        with open_av(path) as container:
            stream = _audio_stream(container, path)
            try:
                for frame in container.decode(stream):
                    x = _frame_to_array(frame)
                    if len(x) != self.channels or frame.sample_rate != self.sample_rate:
                        raise CusepError(
                            f"{path}: audio track changes channel count or sample rate "
                            "midway; convert it to a plain wav file first (e.g. with ffmpeg)")
                    lo, hi = max(start - pos, 0), x.shape[1]
                    if end is not None:
                        hi = min(hi, end - pos)
                    pos += x.shape[1]
                    if hi > lo:
                        pending.append(x[:, lo:hi])
                        held += hi - lo
                    while held >= size:
                        joined = np.concatenate(pending, axis=1)
                        yield np.ascontiguousarray(joined[:, :size])
                        pending, held = [joined[:, size:]], held - size
                    if end is not None and pos >= end:
                        break
            except av.FFmpegError as e:
                raise _undecodable(path, f"corrupt audio data: {e}") from e
        if held:
            yield np.ascontiguousarray(np.concatenate(pending, axis=1))


def open_audio(path: str | Path) -> AudioSource:
    """Open an audio file or the first audio track of a video/container file for block reading
    (:meth:`AudioSource.blocks`); errors about the file are one-line CusepErrors.

    A RIFF wav whose header promises more than it holds (an interrupted copy) gets a warning.
    """
    path = check_input(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            with sf.SoundFile(str(path)) as f:
                rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
        except (sf.SoundFileError, RuntimeError):
            pass  # libsndfile cannot read it: let FFmpeg try (e.g. opus in .ogg, odd mp3)
        else:
            stated = wav_stated_frames(path)
            if stated is not None and stated > frames + rate // 100:
                log.warning(
                    "%s: the header promises %.1f s but the file holds %.1f s: it looks "
                    "truncated (an interrupted copy or download?); only what is there is used",
                    path, stated / rate, frames / rate)
            return AudioSource(path, rate, channels, frames, "soundfile")
    import av

    with open_av(path) as container:
        stream = _audio_stream(container, path)
        try:  # the first frame tells the decoded rate and layout (headers can differ)
            first = next(iter(container.decode(stream)), None)
        except av.FFmpegError as e:
            raise _undecodable(path, f"corrupt audio data: {e}") from e
        if first is None:
            raise CusepError(f"{path}: contains no audio samples; give a file with sound in it")
        rate, channels = int(first.sample_rate), int(first.layout.nb_channels)
        stated = _stated_frames(container, stream, rate)
    return AudioSource(path, rate, channels, stated, "av")


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file or the first audio track of a video/container file.

    Returns ``(audio, sample_rate)``: float32 ``(channels, samples)`` at the file's own rate.
    """
    source = open_audio(path)
    audio = np.concatenate(list(source.blocks(1 << 20)), axis=1)
    return np.ascontiguousarray(audio), source.sample_rate


def wav_stated_frames(path: Path) -> int | None:
    """The number of frames a RIFF/WAVE header's ``data`` chunk promises (None: not a plain
    RIFF wav, or unreadable). A file cut short holds fewer."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block = 12, 0
    while pos + 8 <= len(head):
        cid, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if cid == b"fmt " and pos + 22 <= len(head):
            channels = int.from_bytes(head[pos + 10:pos + 12], "little")
            bits = int.from_bytes(head[pos + 22:pos + 24], "little")
            block = channels * ((bits + 7) // 8)
        if cid == b"data":
            return size // block if block and size != 0xFFFFFFFF else None
        pos += 8 + size + (size & 1)
    return None


def info(path: str | Path) -> AudioInfo:
    """Sample rate, channels and length of an audio or video file, without decoding it all."""
    path = check_input(path)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            i = sf.info(str(path))
        except (sf.SoundFileError, RuntimeError):
            pass
        else:
            return AudioInfo(path, int(i.samplerate), int(i.channels), int(i.frames),
                             i.frames / i.samplerate)
    import av

    with open_av(path) as container:
        stream = _audio_stream(container, path)
        sample_rate = int(stream.sample_rate or 0)
        channels = int(stream.codec_context.channels or 0)
        frames = _stated_frames(container, stream, sample_rate) if sample_rate else None
        if frames is None and container.duration is not None and sample_rate:
            frames = round(container.duration / av.time_base * sample_rate)
    if frames is None or not sample_rate or not channels:  # nothing stated: decode to measure
        source = open_audio(path)
        sample_rate, channels = source.sample_rate, source.channels
        frames = sum(b.shape[1] for b in source.blocks(1 << 20))
    return AudioInfo(path, sample_rate, channels, frames, frames / sample_rate)


# ----------------------------------------------------------------------------- writing


def _as_block(audio: np.ndarray | torch.Tensor, path: Path, channels: int | None) -> np.ndarray:
    """Samples to write -> float32 (channels, n), checked: shape, finite values."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or (channels is not None and a.shape[0] != channels):
        want = f"({channels}, samples)" if channels is not None else "(channels, samples)"
        raise ValueError(f"audio must be {want}; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise CusepError(f"{path}: audio to write contains NaN or infinite values; nothing was "
                         "written (check the input and model output)")
    return a


def _encode(a: np.ndarray, bits: int | None, clamp: bool) -> np.ndarray:
    """float (channels, n) -> what soundfile writes, (n, channels): float32, or integers
    quantised here (x * 2^(bits-1), rounded, clamped) so that reading back as float (libsndfile
    divides by 2^(bits-1)) gives the input within half a step."""
    if clamp:
        a = np.clip(a, -1.0, 1.0)
    if bits is None:
        return np.ascontiguousarray(a.T, dtype=np.float32)
    scale = float(2 ** (bits - 1))
    q = np.rint(a * np.float32(scale))  # exact in float32: a power-of-2 scale, then rounding
    np.clip(q, -scale, scale - 1, out=q)
    if bits == 16:
        return q.T.astype(np.int16, order="C")
    return q.T.astype(np.int32, order="C") << (32 - bits)  # top bits of int32


def _cannot_write(path: Path, e: BaseException) -> CusepError:
    if isinstance(e, OSError):
        return CusepError(f"{path}: cannot write ({e.strerror or e}); choose a writable output "
                          "folder with free space")
    return CusepError(f"{path}: cannot write ({e}); free some disk space or choose another "
                      "output folder")


class AudioWriter:
    """Write a signal block by block, atomically, in bounded memory.

    Blocks (channels, n) are encoded straight into ``fmt`` in a temp file beside ``path``;
    :meth:`finish` syncs it to disk and renames it into place. ``fmt``: "wav16", "wav24",
    "float32" (float wav), "flac" (16-bit), "flac24", "mp3" (``bitrate`` kbit/s, constant; the
    encoder caps it at what the sample rate allows); "wav" means "wav16".

    Samples beyond full scale, which integer formats and mp3 cannot hold: ``clip="rescale"``
    divides the whole signal by its peak (or by the common peak :meth:`finish` is given: the
    stems of one track, which must keep their sum), so from the first such block the writer
    keeps float samples in a spill file and converts them at the end; ``"clamp"`` clips;
    ``"none"`` refuses them (float formats keep every level). mp3 is always encoded at the end,
    from a float spill (a lossy file cannot be read back as written). :meth:`abort` (or an
    exception inside ``with``) removes every temp file; an existing file at ``path`` is only
    ever replaced by a complete one.
    """

    CHUNK = 1 << 18

    def __init__(self, path: str | Path, sample_rate: int, channels: int, fmt: str = "wav16",
                 *, clip: Literal["rescale", "clamp", "none"] = "rescale",
                 bitrate: int | None = None) -> None:
        self.path = path = Path(path)
        key = _ALIASES.get(fmt, fmt)
        if key not in _FORMATS:
            raise CusepError(f"{path}: unknown output format {fmt!r}; choose one of "
                             f"{', '.join(FORMAT_EXTENSIONS)}")
        if clip not in ("rescale", "clamp", "none"):
            raise ValueError(f"clip must be 'rescale', 'clamp' or 'none', not {clip!r}")
        if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer, not {sample_rate!r}")
        if bitrate is not None and (key != "mp3" or bitrate not in MP3_BITRATES):
            raise CusepError(f"{path}: a bitrate is for --format mp3, one of "
                             f"{', '.join(map(str, MP3_BITRATES))} kbit/s (got {bitrate})")
        ext = "." + FORMAT_EXTENSIONS[key]
        suffix = path.suffix.lower()
        if suffix in AUDIO_EXTENSIONS and suffix != ext:
            raise CusepError(f"{path}: format {fmt!r} writes {ext} files, not {suffix}; "
                             f"name the file {path.with_suffix(ext).name} or choose another "
                             "format")
        container, self._subtype, self._bits = _FORMATS[key]
        self._container = container
        limit = {"FLAC": 8, "MP3": 2}.get(container)
        if limit is not None and channels > limit:
            raise CusepError(f"{path}: {container} holds at most {limit} channels, not "
                             f"{channels}; use a wav format")
        if path.is_dir():
            raise CusepError(f"{path}: is a folder; give a file name for the output")
        self.fmt, self.clip, self.rate, self.channels = key, clip, int(sample_rate), channels
        self._options = ({} if key != "mp3" else
                         {"bitrate_mode": "CONSTANT",
                          "compression_level": (320 - (bitrate or 320)) / 288})
        self.peak, self.frames = 0.0, 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CusepError(f"{path}: cannot create output folder {path.parent} "
                             f"({e.strerror}); choose a writable output folder") from e
        stem = temp_beside(path, "")
        self._tmp, self._spill_path, self._final = (stem.with_suffix(s) for s in
                                                    (".part", ".spill", ".tmp"))
        self._spill: sf.SoundFile | None = None
        self._file = self._sink = None
        if key in _LOSSY:
            self._spill = self._open_spill()
        else:
            self._file, self._sink = self._open(self._tmp)

    @property
    def holds_any_level(self) -> bool:
        """True for float formats, which keep samples above full scale as they are."""
        return self._bits is None and self.fmt not in _LOSSY

    def _open(self, target: Path) -> tuple[object, sf.SoundFile]:
        """The final format, encoding into ``target`` (a new file) -> (file, sound file)."""
        f = None
        try:
            f = open(target, "xb")
            return f, sf.SoundFile(f, "w", self.rate, self.channels, self._subtype, None,
                                   self._container, **self._options)
        except (sf.SoundFileError, RuntimeError, OSError) as e:
            if f is not None:
                f.close()
            target.unlink(missing_ok=True)
            raise _cannot_write(self.path, e) from None

    def _open_spill(self) -> sf.SoundFile:
        try:
            return sf.SoundFile(str(self._spill_path), "w", self.rate, self.channels, "FLOAT",
                                None, "WAV")
        except (sf.SoundFileError, RuntimeError, OSError) as e:
            raise _cannot_write(self.path, e) from None

    def _start_spill(self) -> None:
        """From now on keep float samples: copy what was encoded so far into the spill."""
        spill = self._spill = self._open_spill()
        self._sink.close()
        self._file.close()
        self._sink = self._file = None
        if self.frames:
            for chunk in sf.blocks(str(self._tmp), blocksize=self.CHUNK, dtype="float32",
                                   always_2d=True):
                spill.write(chunk)
        self._tmp.unlink(missing_ok=True)

    def write(self, block: np.ndarray | torch.Tensor) -> None:
        """Append float samples (channels, n)."""
        b = _as_block(block, self.path, self.channels)
        if not b.shape[1]:
            return
        peak = float(np.abs(b).max())
        self.peak = max(self.peak, peak)
        try:
            if peak > 1.0 and not self.holds_any_level:
                if self.clip == "none":
                    raise CusepError(
                        f"{self.path}: samples reach {peak:.3f}, outside [-1, 1], which "
                        f"{self.fmt} cannot hold; use clip='rescale' or 'clamp', or the float32 "
                        "format")
                if self.clip == "rescale" and self._spill is None:
                    self._start_spill()
            if self._spill is not None:
                self._spill.write(b.T)
            else:
                self._sink.write(_encode(b, self._bits, self.clip == "clamp"))
        except (sf.SoundFileError, RuntimeError, OSError) as e:
            raise _cannot_write(self.path, e) from None
        self.frames += b.shape[1]

    def finish(self, peak: float | None = None) -> float:
        """Complete the file and rename it into place -> the factor applied.

        With ``clip="rescale"`` a format that cannot hold samples beyond full scale is divided
        by ``peak`` (default: this signal's own) when it exceeds 1; pass the common peak of
        signals that must keep their sum (the stems of one track)."""
        try:
            if self.frames == 0:
                raise CusepError(f"{self.path}: refusing to write zero-length audio; "
                                 "check the input signal")
            peak = self.peak if peak is None else peak
            rescale = self.clip == "rescale" and peak > 1.0 and not self.holds_any_level
            scale = 1.0 / peak if rescale else 1.0
            if self._spill is None and scale == 1.0:
                self._close_sink()
                commit(self._tmp, self.path)
                return scale
            if self._spill is not None:
                self._spill.close()
                source = self._spill_path
            else:
                self._sink.close()
                self._file.close()
                source = self._tmp
            self._file, self._sink = self._open(self._final)
            for chunk in sf.blocks(str(source), blocksize=self.CHUNK, dtype="float32",
                                   always_2d=True):
                self._sink.write(_encode(chunk.T * np.float32(scale), self._bits,
                                         self.clip == "clamp" or rescale))
            self._close_sink()
            commit(self._final, self.path)
            return scale
        except (sf.SoundFileError, RuntimeError, OSError) as e:
            raise _cannot_write(self.path, e) from None
        finally:
            self.abort()

    def _close_sink(self) -> None:
        """Finish encoding and close the file (:func:`cusep.atomic.commit` syncs it)."""
        self._sink.close()
        self._file.close()

    def abort(self) -> None:
        """Remove the temp files (the destination is never touched)."""
        for handle in (self._sink, self._spill, self._file):
            if handle is not None and not handle.closed:
                try:
                    handle.close()
                except (sf.SoundFileError, RuntimeError, OSError):
                    pass
        for p in (self._tmp, self._spill_path, self._final):
            p.unlink(missing_ok=True)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_audio(
    path: str | Path,
    audio: np.ndarray | torch.Tensor,
    sample_rate: int,
    fmt: str = "wav16",
    *,
    clip: Literal["rescale", "clamp", "none"] = "rescale",
    bitrate: int | None = None,
) -> None:
    """Write ``audio`` (channels, samples) atomically (:class:`AudioWriter`, one block).

    On any error an existing file at ``path`` is left untouched and no temp file remains.
    """
    path = Path(path)
    a = _as_block(audio, path, None)
    if a.shape[0] > 64:
        raise ValueError(f"audio must be (channels, samples); got shape {a.shape}")
    if a.shape[1] == 0:
        raise CusepError(f"{path}: refusing to write zero-length audio; check the input signal")
    with AudioWriter(path, sample_rate, a.shape[0], fmt, clip=clip, bitrate=bitrate) as writer:
        writer.write(a)
        writer.finish()


# ----------------------------------------------------------------------------- signals


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels: (channels, samples) or (samples,) -> float32 (samples,)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        return a.copy()
    if a.ndim != 2:
        raise ValueError(f"audio must be (channels, samples) or (samples,); got shape {a.shape}")
    return a.mean(axis=0)


def _sinc_ratio(orig_sr: int, target_sr: int) -> tuple[int, int, float, int]:
    """The reduced rate ratio and its sinc filter: (orig, new, cut-off base, width in taps)."""
    g = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // g, target_sr // g
    base = min(orig, new) * _ROLLOFF
    return orig, new, base, math.ceil(_LOWPASS_WIDTH * orig / base)


def _kernel_size(orig_sr: int, target_sr: int) -> int:
    orig, new, _, width = _sinc_ratio(orig_sr, target_sr)
    return new * (2 * width + orig)


@dataclass(frozen=True)
class SincKernel:
    """torchaudio's Kaiser-windowed sinc kernels (cusep's width, rolloff and beta) for one rate
    pair, in float64: ``weights`` (outputs per row, 1, taps), ``width`` (the taps before an
    output's position), ``stride`` (input samples per row). Each row is the kernel of one
    output; a row spans several rate periods, giving the convolution at least 16 output
    channels (it is 10x faster at 4:1 than with the one channel of the reduced ratio)."""

    weights: torch.Tensor
    width: int
    stride: int

    @classmethod
    def build(cls, orig_sr: int, target_sr: int) -> SincKernel:
        orig, new, base, width = _sinc_ratio(orig_sr, target_sr)
        periods = -(-16 // new)
        idx = torch.arange(-width, width + orig * periods, dtype=torch.float64) / orig
        t = torch.arange(0, -new * periods, -1, dtype=torch.float64)[:, None] / new + idx
        t = (t * base).clamp_(-_LOWPASS_WIDTH, _LOWPASS_WIDTH)
        window = torch.special.i0(_BETA * torch.sqrt(1 - (t / _LOWPASS_WIDTH) ** 2))
        t *= math.pi
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1.0, t))
        kernel = sinc * window / torch.special.i0(torch.tensor(_BETA, dtype=torch.float64))
        return cls((kernel * (base / orig))[:, None], width, orig * periods)

    def __call__(self, x: torch.Tensor, length: int) -> torch.Tensor:
        """``torchaudio.functional.resample`` to float rounding: (..., n) float -> (..., length)."""
        flat = x.reshape(-1, x.shape[-1])
        padded = torch.nn.functional.pad(flat, (self.width, self.width + self.stride))
        weights = self.weights.to(device=x.device, dtype=x.dtype)
        y = torch.nn.functional.conv1d(padded[:, None], weights, stride=self.stride)
        return y.transpose(1, 2).reshape(*x.shape[:-1], -1)[..., :length]


def _fft_resample(x: torch.Tensor, orig_sr: int, target_sr: int, length: int) -> torch.Tensor:
    """Band-limited resampling by truncating / zero-padding the spectrum (any rate ratio).

    The signal is zero-padded to a whole number of rate periods (and at least 1024 samples,
    keeping its end from wrapping onto its start), so the output lies on the exact time grid.
    """
    period = orig_sr // math.gcd(orig_sr, target_sr)
    n = -(-(x.shape[-1] + 1024) // period) * period
    x = torch.nn.functional.pad(x, (0, n - x.shape[-1]))
    full = n * target_sr // orig_sr
    spec = torch.fft.rfft(x, dim=-1)
    bins = full // 2 + 1
    if bins <= spec.shape[-1]:
        spec = spec[..., :bins]
    else:
        pad = torch.zeros(*spec.shape[:-1], bins - spec.shape[-1], dtype=spec.dtype,
                          device=spec.device)
        if n % 2 == 0:  # the old Nyquist bin splits between +f and -f
            spec = spec.clone()
            spec[..., -1] = spec[..., -1] / 2
        spec = torch.cat([spec, pad], dim=-1)
    return torch.fft.irfft(spec, n=full, dim=-1)[..., :length] * (full / n)


def resample(audio: ArrayOrTensor, orig_sr: int, target_sr: int,
             kernel: SincKernel | None = None) -> ArrayOrTensor:
    """Resample along the last axis with a Kaiser-windowed sinc (torchaudio's, computed faster).

    ``audio``: (..., samples) array or tensor (any device) -> same type and dtype,
    (..., round(samples * target_sr / orig_sr)). Identity when the rates are equal. Rates
    whose ratio needs a huge polyphase filter (e.g. 44101 -> 11025) go through the FFT.
    ``kernel``: ``SincKernel.build(orig_sr, target_sr)``, for many calls at one rate pair.
    """
    for name, sr in (("orig_sr", orig_sr), ("target_sr", target_sr)):
        if isinstance(sr, bool) or int(sr) != sr or sr <= 0:
            raise ValueError(f"{name} must be a positive integer, not {sr!r}")
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr == target_sr:
        return audio
    is_numpy = isinstance(audio, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(audio)) if is_numpy else audio
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    n = x.shape[-1]
    length = (2 * n * target_sr + orig_sr) // (2 * orig_sr)  # round half up, exact
    if n == 0 or length == 0:
        y = x.new_zeros(*x.shape[:-1], length)
    elif _kernel_size(orig_sr, target_sr) <= _MAX_KERNEL:
        y = (kernel or SincKernel.build(orig_sr, target_sr))(x, length)
    else:
        y = _fft_resample(x, orig_sr, target_sr, length)
    if dtype.is_floating_point:
        y = y.to(dtype)
    if is_numpy:
        return y.numpy().astype(audio.dtype if audio.dtype.kind == "f" else np.float32,
                                copy=False)
    return y


# ----------------------------------------------------------------------------- streaming


class StreamResampler:
    """Resample a signal that arrives in blocks, in memory bounded by the block size: the
    output is the one :func:`resample` gives for the whole signal (within float rounding; the
    FFT path of unusual rate ratios, such as 44101 -> 11025 Hz, is an ideal interpolator
    whose kernel never ends: cut at 2 s, it stays within 2e-3 of full scale on white noise).

    Blocks (..., n) go in through :meth:`push` (any sizes); each returns the output samples
    that are ready, (..., m); :meth:`flush` returns the rest once the signal has ended. The
    input is cut into segments of whole rate periods, each resampled with enough context on
    both sides that the filter sees what it would see in the whole signal.
    """

    def __init__(self, orig_sr: int, target_sr: int, min_segment: int = 1 << 16) -> None:
        resample(np.zeros(0, np.float32), orig_sr, target_sr)  # validates the rates
        self.orig_sr, self.target_sr = int(orig_sr), int(target_sr)
        g = math.gcd(self.orig_sr, self.target_sr)
        self._o, self._t = self.orig_sr // g, self.target_sr // g  # one rate period
        self._kernel = None
        if _kernel_size(self.orig_sr, self.target_sr) <= _MAX_KERNEL:  # sinc: exact context
            self._kernel = SincKernel.build(self.orig_sr, self.target_sr)
            reach = self._kernel.width + self._o
        else:  # FFT path: its implicit (periodic sinc) kernel decays slowly: 2 s of context
            reach = 2 * self.orig_sr
        self._ctx = -(-(reach + 1) // self._o) * self._o  # whole periods
        self._seg = -(-max(min_segment, self._ctx) // self._o) * self._o
        self._buf: np.ndarray | None = None  # input from (segment start - context) on
        self._seen = 0  # input samples pushed
        self._made = 0  # output samples returned
        self._lead: tuple[int, ...] = ()  # the leading (channel) shape of the blocks

    def _take(self, x: np.ndarray, n_in: int) -> np.ndarray:
        """Resample the buffered ``x`` (context + n_in + context) -> the n_in part's output."""
        y = resample(x, self.orig_sr, self.target_sr, self._kernel)
        lo = self._ctx * self._t // self._o
        return y[..., lo:lo + n_in * self._t // self._o]

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add input (..., n) -> the output samples now ready (..., m), float32."""
        b = np.asarray(block, dtype=np.float32)
        self._lead = b.shape[:-1]
        if self.orig_sr == self.target_sr:
            self._seen += b.shape[-1]
            self._made += b.shape[-1]
            return b
        if self._buf is None:
            self._buf = np.zeros((*b.shape[:-1], self._ctx), np.float32)
        self._buf = np.concatenate([self._buf, b], axis=-1)
        self._seen += b.shape[-1]
        out = []
        span = 2 * self._ctx + self._seg
        while self._buf.shape[-1] >= span:
            out.append(self._take(self._buf[..., :span], self._seg))
            self._buf = self._buf[..., self._seg:]
        return self._emit(out, b.shape[:-1])

    def flush(self) -> np.ndarray:
        """The signal has ended -> its last output samples (..., m)."""
        total = (2 * self._seen * self.target_sr + self.orig_sr) // (2 * self.orig_sr)
        if self._buf is None:
            return np.zeros((*self._lead, 0), np.float32)
        n_in = self._buf.shape[-1] - self._ctx
        n_seg = -(-n_in // self._o) * self._o
        pad = self._ctx + n_seg - n_in
        x = np.pad(self._buf, [(0, 0)] * (self._buf.ndim - 1) + [(0, pad)])
        self._buf = None
        y = self._take(x, n_seg) if n_seg else x[..., :0]
        return self._emit([y[..., :max(total - self._made, 0)]], x.shape[:-1])

    def _emit(self, parts: list[np.ndarray], lead: tuple[int, ...]) -> np.ndarray:
        y = np.concatenate(parts, axis=-1) if parts else np.zeros((*lead, 0), np.float32)
        self._made += y.shape[-1]
        return y
