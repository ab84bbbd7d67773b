"""Audio I/O on real signals made here: round-trips, containers made with PyAV, errors."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from cusep.audio import (
    AUDIO_EXTENSIONS,
    FORMAT_EXTENSIONS,
    AudioInfo,
    StreamResampler,
    info,
    open_audio,
    read_audio,
    resample,
    to_mono,
    write_audio,
)
from cusep.errors import CusepError


def sines(channels: int, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    """(channels, samples) float32: one sine per channel at 440, 550, 660 ... Hz."""
    t = np.arange(int(round(sr * seconds))) / sr
    return np.stack(
        [amp * np.sin(2 * np.pi * (440 + 110 * c) * t) for c in range(channels)]
    ).astype(np.float32)


def noise(channels: int, n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-1, 1, (channels, n))
    return x.astype(np.float32)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def make_container(
    path: Path,
    audio: np.ndarray | None,
    sr: int,
    codec: str,
    video: bool,
    bit_rate: int | None = None,
) -> None:
    """Encode ``audio`` (channels, samples) with PyAV; with ``video``, a 16x16 mpeg4 stream
    is added first so the audio track is not stream 0."""
    with av.open(str(path), "w") as out:
        vs = None
        if video:
            vs = out.add_stream("mpeg4", rate=10)
            vs.width, vs.height, vs.pix_fmt = 16, 16, "yuv420p"
        n = 0
        if audio is not None:
            n = audio.shape[1]
            a = out.add_stream(codec, rate=sr)
            a.layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
            if bit_rate:
                a.bit_rate = bit_rate
            for i in range(0, n, 1024):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(audio[:, i:i + 1024]), format="fltp",
                    layout=a.layout.name,
                )
                frame.sample_rate, frame.pts = sr, i
                frame.time_base = fractions.Fraction(1, sr)
                for p in a.encode(frame):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)
        if vs is not None:
            for k in range(max(3, n * 10 // max(sr, 1))):
                img = np.full((16, 16, 3), 40 * k % 256, np.uint8)
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts = k
                for p in vs.encode(vf):
                    out.mux(p)
            for p in vs.encode(None):
                out.mux(p)


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("fmt", "tol", "subtype"),
    [
        ("wav16", 1 / 32768, "PCM_16"),
        ("wav", 1 / 32768, "PCM_16"),
        ("wav24", 1 / 2**23, "PCM_24"),
        ("float32", 0.0, "FLOAT"),
        ("flac", 1 / 32768, "PCM_16"),
        ("flac24", 1 / 2**23, "PCM_24"),
    ],
)
def test_round_trip_each_format(tmp_path, fmt, tol, subtype):
    sr = 44100
    x = 0.6 * sines(2, sr, 0.25) + 0.3 * noise(2, int(sr * 0.25))
    x[0, 100] = 1.0  # full scale and the most negative value survive
    x[1, 200] = -1.0
    path = tmp_path / f"out.{FORMAT_EXTENSIONS[fmt]}"
    write_audio(path, x, sr, fmt)
    assert sf.info(str(path)).subtype == subtype
    y, sr2 = read_audio(path)
    assert sr2 == sr and y.dtype == np.float32 and y.shape == x.shape
    err = np.abs(y - x).max()
    assert err <= tol * 1.0001
    if fmt == "float32":
        np.testing.assert_array_equal(y, x)
    assert info(path) == AudioInfo(path, sr, 2, x.shape[1], x.shape[1] / sr)


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("sr", [8000, 11025, 44100, 48000])
def test_channels_and_rates(tmp_path, channels, sr):
    x = sines(channels, sr, 0.05) * np.linspace(1, 0.2, channels)[:, None].astype(np.float32)
    for fmt in ("wav16", "flac"):
        path = tmp_path / f"x.{FORMAT_EXTENSIONS[fmt]}"
        write_audio(path, x, sr, fmt)
        y, sr2 = read_audio(path)
        assert sr2 == sr and y.shape == x.shape
        assert np.abs(y - x).max() <= 1 / 32768
    mono = tmp_path / "mono.wav"
    write_audio(mono, x[0], sr)  # 1-D input is one channel
    assert read_audio(mono)[0].shape == (1, x.shape[1])


def test_clip_policies(tmp_path):
    x = sines(2, 8000, 0.1, amp=2.0)
    write_audio(tmp_path / "r.wav", x, 8000)  # rescale: the whole signal, not just the peaks
    y, _ = read_audio(tmp_path / "r.wav")
    assert np.abs(y).max() == pytest.approx(1.0, abs=2 / 32768)
    np.testing.assert_allclose(y, x / np.abs(x).max(), atol=1 / 32768)

    write_audio(tmp_path / "c.wav", x, 8000, clip="clamp")
    y, _ = read_audio(tmp_path / "c.wav")
    np.testing.assert_allclose(y, np.clip(x, -1, 1), atol=1 / 32768)

    write_audio(tmp_path / "f.wav", x, 8000, "float32", clip="none")
    np.testing.assert_array_equal(read_audio(tmp_path / "f.wav")[0], x)

    with pytest.raises(CusepError, match=r"n\.flac.*outside \[-1, 1\]"):
        write_audio(tmp_path / "n.flac", x, 8000, "flac", clip="none")
    assert not (tmp_path / "n.flac").exists()


@pytest.mark.parametrize("bitrate", [None, 128])
def test_mp3_keeps_length_alignment_and_bitrate(tmp_path, bitrate):
    x = sines(2, 44100, 3.0, amp=0.4)
    path = tmp_path / "s.mp3"
    write_audio(path, x, 44100, "mp3", bitrate=bitrate)
    y, rate = read_audio(path)
    assert rate == 44100 and y.shape == x.shape  # gapless: the exact length, not shifted
    assert corr(y[0, 4410:-4410], x[0, 4410:-4410]) > 0.999
    kbps = path.stat().st_size * 8 / 3.0 / 1000
    assert abs(kbps - (bitrate or 320)) < 0.1 * (bitrate or 320)


def test_writer_rescales_from_the_first_loud_block_and_by_a_common_peak(tmp_path):
    from cusep.audio import AudioWriter

    x = sines(1, 8000, 1.0, amp=0.5)
    x[:, 6000:] *= 6.0  # loud only at the end: the quiet start was already encoded
    with AudioWriter(tmp_path / "loud.wav", 8000, 1) as writer:
        for i in range(0, 8000, 1000):
            writer.write(x[:, i:i + 1000])
        scale = writer.finish()
    assert scale == pytest.approx(1 / 3.0, rel=1e-3)
    np.testing.assert_allclose(read_audio(tmp_path / "loud.wav")[0], x * scale, atol=1 / 32768)
    quiet = sines(1, 8000, 1.0, amp=0.5)
    with AudioWriter(tmp_path / "quiet.flac", 8000, 1, "flac") as writer:
        writer.write(quiet)
        assert writer.finish(peak=2.0) == 0.5  # a louder stem of the same track sets it
    # encoded once, re-read and scaled: two roundings, at most one step apart
    np.testing.assert_allclose(read_audio(tmp_path / "quiet.flac")[0], quiet / 2,
                               atol=1.01 / 32768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loud.wav", "quiet.flac"]


def test_write_accepts_tensor_and_creates_folders(tmp_path):
    x = torch.from_numpy(sines(2, 8000, 0.1))
    path = tmp_path / "a" / "b" / "vn.flac"
    write_audio(path, x, 8000, "flac")
    np.testing.assert_allclose(read_audio(path)[0], x.numpy(), atol=1 / 32768)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_atomic_write_keeps_existing_file(tmp_path, bad):
    path = tmp_path / "stem.wav"
    good = sines(1, 8000, 0.1)
    write_audio(path, good, 8000)
    before = path.read_bytes()
    broken = good.copy()
    broken[0, 10] = bad
    with pytest.raises(CusepError, match=r"stem\.wav.*NaN or infinite"):
        write_audio(path, broken, 8000)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.wav"]  # no temp file left

    write_audio(path, -good, 8000)  # a good write replaces it
    np.testing.assert_allclose(read_audio(path)[0], -good, atol=1 / 32768)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.wav"]


def test_failed_encoding_leaves_no_temp_file(tmp_path):
    path = tmp_path / "many.flac"
    path.write_bytes(b"old")
    with pytest.raises(CusepError, match=r"many\.flac.*at most 8 channels"):
        write_audio(path, sines(9, 8000, 0.01), 8000, "flac")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["many.flac"]


def test_write_errors_name_the_file(tmp_path):
    x = sines(1, 8000, 0.01)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(CusepError, match=r"not_a_folder.*writable output folder"):
        write_audio(blocker / "out.wav", x, 8000)
    with pytest.raises(CusepError, match=r"out\.wav.*unknown output format 'ogg'"):
        write_audio(tmp_path / "out.wav", x, 8000, "ogg")
    with pytest.raises(CusepError, match=r"out\.wav.*writes \.mp3 files"):
        write_audio(tmp_path / "out.wav", x, 8000, "mp3")
    with pytest.raises(CusepError, match=r"x\.mp3.*at most 2 channels"):
        write_audio(tmp_path / "x.mp3", sines(3, 8000, 0.01), 8000, "mp3")
    with pytest.raises(CusepError, match=r"bitrate is for --format mp3, one of 64"):
        write_audio(tmp_path / "x.mp3", x, 8000, "mp3", bitrate=100)
    with pytest.raises(CusepError, match=r"out\.wav.*writes \.flac files"):
        write_audio(tmp_path / "out.wav", x, 8000, "flac")
    with pytest.raises(CusepError, match=r"empty\.wav.*zero-length"):
        write_audio(tmp_path / "empty.wav", np.zeros((2, 0), np.float32), 8000)
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(CusepError, match=r"dir\.wav.*is a folder"):
        write_audio(tmp_path / "dir.wav", x, 8000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.wav", "not_a_folder"]


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("name", "codec", "video", "sr", "exact"),
    [
        ("clip.mp4", "aac", True, 44100, True),
        ("clip.m4a", "aac", False, 48000, True),
        ("clip.mkv", "libopus", True, 48000, False),
        ("clip.webm", "libopus", False, 48000, False),
        ("clip.opus", "libopus", False, 48000, False),
        ("opus.ogg", "libopus", False, 48000, False),
    ],
)
def test_read_containers(tmp_path, name, codec, video, sr, exact):
    x = sines(2, sr, 0.5)
    path = tmp_path / name
    make_container(path, x, sr, codec, video, bit_rate=160_000)
    y, sr2 = read_audio(path)
    assert sr2 == sr and y.shape[0] == 2 and y.dtype == np.float32
    if exact:  # AAC: priming and last-frame padding trimmed to the stated duration
        assert y.shape[1] == x.shape[1]
    else:  # Opus: within one 20 ms frame
        assert abs(y.shape[1] - x.shape[1]) <= sr // 50
    n = min(x.shape[1], y.shape[1])
    for c in range(2):
        assert corr(x[c, :n], y[c, :n]) > 0.99
    i = info(path)
    assert (i.sample_rate, i.channels) == (sr, 2)
    assert abs(i.frames - y.shape[1]) <= 1024


def test_read_packed_pcm_keeps_channels_apart(tmp_path):
    sr = 16000
    x = np.stack([sines(1, sr, 0.2)[0], 0.5 * noise(1, int(sr * 0.2))[0]])
    path = tmp_path / "pcm.mkv"
    make_container(path, x, sr, "pcm_s16le", video=True)
    y, sr2 = read_audio(path)
    assert sr2 == sr and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 32768)


@pytest.mark.parametrize(("ext", "sf_format", "subtype"),
                         [("mp3", "MP3", "MPEG_LAYER_III"), ("ogg", "OGG", "VORBIS")])
def test_read_mp3_and_ogg(tmp_path, ext, sf_format, subtype):
    sr = 44100
    x = sines(2, sr, 0.5) * np.sin(np.pi * np.arange(sr // 2) / (sr // 2)).astype(np.float32)
    path = tmp_path / f"lossy.{ext}"
    sf.write(str(path), x.T, sr, format=sf_format, subtype=subtype)
    y, sr2 = read_audio(path)
    assert sr2 == sr and y.shape[0] == 2
    assert abs(y.shape[1] - x.shape[1]) <= 1152
    n = min(x.shape[1], y.shape[1])
    for c in range(2):
        assert corr(x[c, :n], y[c, :n]) > 0.99


def test_content_not_suffix_decides(tmp_path):
    x = sines(1, 8000, 0.1)
    wav_named_mp4 = tmp_path / "odd.mp4"
    sf.write(str(wav_named_mp4), x.T, 8000, format="WAV", subtype="FLOAT")
    y, sr = read_audio(wav_named_mp4)
    assert sr == 8000
    np.testing.assert_array_equal(y, x)


def test_video_without_audio_track(tmp_path):
    path = tmp_path / "silent_film.mp4"
    make_container(path, None, 0, "", video=True)
    for fn in (read_audio, info):
        with pytest.raises(CusepError, match=r"silent_film\.mp4: has no audio track"):
            fn(path)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("random.wav", np.random.default_rng(1).bytes(4000), "cannot be decoded"),
        ("random.mp4", np.random.default_rng(2).bytes(4000), "cannot be decoded"),
        ("random.bin", np.random.default_rng(3).bytes(4000), "not an audio or video file"),
        ("notes.wav", b"just some text\n" * 40, "cannot be decoded"),
        ("notes.txt", b"just some text\n" * 40, "not an audio or video file"),
        ("empty.flac", b"", "is empty"),
    ],
)
def test_unreadable_files(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    for fn in (read_audio, info):
        with pytest.raises(CusepError, match=problem) as e:
            fn(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_mp4(tmp_path):
    path = tmp_path / "cut.mp4"
    make_container(path, sines(1, 44100, 0.5), 44100, "aac", video=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # moov atom (at the end) lost
    with pytest.raises(CusepError, match=r"cut\.mp4: cannot be decoded"):
        read_audio(path)


def test_missing_folder_and_zero_length(tmp_path):
    with pytest.raises(CusepError, match=r"nope\.wav: file not found"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(CusepError, match=r"is a folder"):
        read_audio(tmp_path)
    with pytest.raises(CusepError, match=r"nope\.wav: file not found"):
        info(tmp_path / "nope.wav")
    empty = tmp_path / "zero.wav"
    sf.write(str(empty), np.zeros((0, 2), np.float32), 8000)
    with pytest.raises(CusepError, match=r"zero\.wav: contains no audio samples"):
        read_audio(empty)
    assert info(empty).frames == 0


# ----------------------------------------------------------------------------- signals


def test_to_mono():
    x = np.stack([np.ones(5), -np.ones(5), 3 * np.ones(5)]).astype(np.float32)
    np.testing.assert_allclose(to_mono(x), np.ones(5))
    assert to_mono(x).shape == (5,) and to_mono(x).dtype == np.float32
    np.testing.assert_array_equal(to_mono(x[0]), x[0])


@pytest.mark.parametrize(
    ("orig", "target", "hz"),
    [(44100, 11025, 1000.0), (48000, 11025, 2500.0), (11025, 44100, 3000.0),
     (22050, 16000, 440.0), (44101, 11025, 1234.0)],  # the last: coprime rates (FFT path)
)
def test_resample_sine(orig, target, hz):
    n = orig // 2 + 7
    t = np.arange(n) / orig
    x = np.stack([0.8 * np.sin(2 * np.pi * hz * t), 0.3 * np.cos(2 * np.pi * hz * t)])
    x = x.astype(np.float32)
    y = resample(x, orig, target)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert y.shape == (2, int(n * target / orig + 0.5))
    ty = np.arange(y.shape[1]) / target
    expect = np.stack([0.8 * np.sin(2 * np.pi * hz * ty), 0.3 * np.cos(2 * np.pi * hz * ty)])
    inner = slice(target // 20, -target // 20)  # away from the edges
    assert np.abs(y[:, inner] - expect[:, inner]).max() < 2e-3
    assert dominant_hz(y[0], target) == pytest.approx(hz, abs=target / y.shape[1] + 1)


@pytest.mark.parametrize(("orig", "target"), [(44100, 11025), (22050, 11025), (48000, 11025),
                                            (16000, 11025), (11025, 44100), (8000, 11025),
                                            (88200, 11025), (32000, 16000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resample_equals_torchaudio(orig, target, dtype):
    """The sinc path is torchaudio's resampler (its kernel, several rate periods per row),
    against torchaudio in float64: its float32 kernel is off by up to 3e-5 at 48 kHz, ours is
    computed in float64."""
    import torchaudio.functional as AF

    from cusep.audio import _BETA, _LOWPASS_WIDTH, _ROLLOFF

    n = orig // 3 + 11
    x = torch.randn(2, 3, n, generator=torch.Generator().manual_seed(orig), dtype=dtype) * 0.3
    y = resample(x, orig, target)
    ref = AF.resample(x.double(), orig, target, lowpass_filter_width=_LOWPASS_WIDTH,
                      rolloff=_ROLLOFF, resampling_method="sinc_interp_kaiser", beta=_BETA)
    ref = ref[..., :y.shape[-1]].to(dtype)
    assert y.dtype == dtype and y.shape == (2, 3, (2 * n * target + orig) // (2 * orig))
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)


def test_resample_removes_what_the_new_rate_cannot_hold():
    sr = 44100
    t = np.arange(sr // 4) / sr
    x = (np.sin(2 * np.pi * 500 * t) + np.sin(2 * np.pi * 8000 * t)).astype(np.float32)
    y = resample(x, sr, 11025)  # 8 kHz is above the new Nyquist (5512.5 Hz): no alias at 3025 Hz
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 11025)
    assert spec[np.abs(freqs - 3025) < 30].max() < 1e-3 * spec[np.abs(freqs - 500) < 30].max()


def test_resample_tensor_and_identity():
    x = torch.randn(3, 2, 1000, dtype=torch.float64)
    y = resample(x, 16000, 11025)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    assert y.shape == (3, 2, round(1000 * 11025 / 16000))
    assert resample(x, 8000, 8000) is x
    a = np.zeros(10, np.float32)
    assert resample(a, 8000, 8000) is a
    with pytest.raises(ValueError):
        resample(a, 0, 8000)


def test_extension_tables():
    for ext in (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".mp4", ".mov",
                ".mkv", ".webm", ".m4a", ".aac", ".opus"):
        assert ext in AUDIO_EXTENSIONS
    assert ".txt" not in AUDIO_EXTENSIONS
    assert FORMAT_EXTENSIONS == {"wav16": "wav", "wav24": "wav", "float32": "wav",
                                 "flac": "flac", "flac24": "flac", "mp3": "mp3", "wav": "wav"}


def test_audio_writer_streams_like_write_audio_and_cleans_up(tmp_path):
    from cusep.audio import AudioWriter

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 30000)) * 0.6).astype(np.float32)  # peaks above 1: rescaled
    write_audio(tmp_path / "whole.wav", x, 22050)
    with AudioWriter(tmp_path / "blocks.wav", 22050, 2) as writer:
        for start in range(0, x.shape[1], 7001):
            writer.write(x[:, start:start + 7001])
        writer.finish()
    a, _ = read_audio(tmp_path / "whole.wav")
    b, rate = read_audio(tmp_path / "blocks.wav")
    assert rate == 22050 and b.shape == x.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=1.01 / 32768)  # at most one step apart
    assert np.abs(b).max() <= 1.0
    existing = tmp_path / "keep.wav"
    write_audio(existing, x[:, :100] * 0.1, 22050)
    before = existing.read_bytes()
    writer = AudioWriter(existing, 22050, 2)
    writer.write(x[:, :50])
    with pytest.raises(CusepError, match="NaN"):
        writer.write(np.full((2, 10), np.nan, np.float32))
    writer.abort()
    assert existing.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.wav", "keep.wav", "whole.wav"]


# ----------------------------------------------------------------------------- streaming reads


@pytest.mark.parametrize(("orig", "target", "tol"), [
    (44100, 11025, 1e-6), (48000, 11025, 1e-6), (8000, 11025, 1e-6), (96000, 22050, 1e-6),
    (11025, 11025, 0.0), (44101, 11025, 2e-3),  # the last: the FFT path (coprime rates)
])
def test_stream_resampler_matches_the_whole_signal(orig, target, tol):
    rng = np.random.default_rng(orig)
    seconds = 8 if tol > 1e-5 else 3  # the FFT path holds 2 s of context on each side
    x = noise(2, seconds * orig + 37, seed=orig) * 0.3
    whole = resample(x, orig, target)
    r = StreamResampler(orig, target, min_segment=4096)
    parts, i = [], 0
    while i < x.shape[1]:
        k = int(rng.integers(1, 30000))
        parts.append(r.push(x[:, i:i + k]))
        i += k
    parts.append(r.flush())
    assert max(p.shape[-1] for p in parts) < whole.shape[-1]  # output came out as it went
    streamed = np.concatenate(parts, axis=-1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=tol)


@pytest.mark.parametrize("name", ["s.wav", "s.flac", "s.m4a"])
def test_open_audio_blocks_and_spans(tmp_path, name):
    x = sines(2, 22050, 2.0, amp=0.4)
    path = tmp_path / name
    if name.endswith(".m4a"):
        make_container(path, x, 22050, "aac", video=False)
    else:
        sf.write(path, x.T, 22050)
    whole, rate = read_audio(path)
    source = open_audio(path)
    assert (source.sample_rate, source.channels) == (22050, 2) and rate == 22050
    blocks = list(source.blocks(size=3000))
    assert all(b.shape[0] == 2 and 0 < b.shape[1] <= 3000 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)
    span = np.concatenate(list(source.blocks(size=777, start=5000, stop=17000)), axis=1)
    np.testing.assert_array_equal(span, whole[:, 5000:17000])
    tail = np.concatenate(list(source.blocks(start=whole.shape[1] - 10, stop=10**9)), axis=1)
    np.testing.assert_array_equal(tail, whole[:, -10:])
    with pytest.raises(CusepError, match=r"no audio samples after .* earlier start"):
        list(source.blocks(start=whole.shape[1] + 100))
