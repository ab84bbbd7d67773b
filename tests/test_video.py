"""cusep.video: stream facts, boxes.json validation, frames, crops, motion, overlays.

Every video is made here with PyAV: tiny (160x96 or smaller, 25 fps, 2 s), lossless h264 so
that pixel values survive, with known content: a frame counter coded as a grey level, or a
square flashing inside player 1's box from 0.5 s to 1.0 s.
"""

from __future__ import annotations

import fractions
import json
import math
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from cusep.errors import CusepError
from cusep.video import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Player,
    crop_players,
    load_boxes,
    motion_energy,
    parse_boxes,
    read_frames,
    video_info,
    write_overlay,
)
from cusep.video import frames as video_frames
from cusep.video import overlay as video_overlay

W, H, FPS, SECONDS = 160, 96, 25, 2.0
N_FRAMES = round(FPS * SECONDS)
BOX1, BOX2 = (10, 10, 60, 60), (90, 10, 60, 60)  # the two players of the motion video
FLASH = (0.5, 1.0)  # seconds during which a square flashes inside BOX1


def level(k: int) -> int:
    """Grey level of frame ``k`` in the counter video."""
    return 20 + 4 * k


def make_video(
    path: Path,
    draw: Callable[[int], np.ndarray],
    *,
    frames: int = N_FRAMES,
    fps: int = FPS,
    audio: str | None = None,
    gop: int | None = None,
) -> Path:
    """Encode ``draw(k)`` (H, W, 3) uint8 for k < frames as lossless h264 (qp 0); with
    ``audio`` (a codec such as "aac" or "pcm_s16le") a mono 440 Hz tone of the same length."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        first = draw(0)
        vs.height, vs.width = first.shape[:2]
        vs.pix_fmt = "yuv444p"  # no chroma subsampling: colours survive exactly
        vs.codec_context.options = {"qp": "0", "preset": "ultrafast"}
        if gop:
            vs.codec_context.gop_size = gop
        a = out.add_stream(audio, rate=16000) if audio else None
        if a is not None:
            a.layout = "mono"
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(draw(k), format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if a is not None:
            n = frames * 16000 // fps
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
            fmt = "fltp" if audio == "aac" else "s16"
            for i in range(0, n, 1024):
                chunk = tone[None, i:i + 1024]
                if fmt == "s16":
                    chunk = (chunk * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt,
                                                   layout="mono")
                frame.sample_rate, frame.pts = 16000, i
                frame.time_base = fractions.Fraction(1, 16000)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))
    return path


def counter_frame(k: int, width: int = W, height: int = H) -> np.ndarray:
    return np.full((height, width, 3), level(k), np.uint8)


def motion_frame(k: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
    if FLASH[0] <= k / FPS < FLASH[1]:
        img[30:50, 30:50] = 255 * (k % 2)  # inside BOX1
    return img


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        "counter": make_video(root / "counter.mp4", counter_frame, audio="aac"),
        "motion": make_video(root / "motion.mp4", motion_frame),
        "pcm": make_video(root / "pcm.mkv", lambda k: counter_frame(k, 64, 48), frames=10,
                          audio="pcm_s16le"),
    }


def grey_levels(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


# ----------------------------------------------------------------------------- video_info


def test_video_info(videos):
    info = video_info(videos["counter"])
    assert (info.width, info.height, info.frames, info.has_audio) == (W, H, N_FRAMES, True)
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(SECONDS, abs=0.05)
    assert video_info(videos["motion"]).has_audio is False


def test_video_info_errors(tmp_path, videos):
    with pytest.raises(CusepError, match=r"missing\.mp4: file not found"):
        video_info(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(CusepError, match=r"empty\.mp4: is empty"):
        video_info(tmp_path / "empty.mp4")
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CusepError, match=r"corrupt\.mp4: cannot be decoded as video"):
        video_info(tmp_path / "corrupt.mp4")
    data = videos["counter"].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(CusepError, match=r"cut\.mp4: cannot be decoded as video"):
        read_frames(tmp_path / "cut.mp4", [0.0])
    sf.write(tmp_path / "sound.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(CusepError, match=r"sound\.wav: has no video stream"):
        video_info(tmp_path / "sound.wav")
    with pytest.raises(CusepError, match=r"is a folder"):
        video_info(tmp_path)


# ----------------------------------------------------------------------------- frames


def test_read_frames_picks_the_frame_shown(videos):
    times = [1.0, 0.0, 0.5, 10.0, -1.0, 0.039, 0.04, 1.0, 1.999]
    frames = read_frames(videos["counter"], times)
    assert frames.shape == (len(times), H, W, 3) and frames.dtype == np.uint8
    expected = [level(k) for k in (25, 0, 12, N_FRAMES - 1, 0, 0, 1, 25, N_FRAMES - 1)]
    np.testing.assert_allclose(grey_levels(frames), expected, atol=1.5)
    assert read_frames(videos["counter"], []).shape == (0, H, W, 3)


def test_read_frames_seeks_far_ahead(tmp_path, monkeypatch):
    path = make_video(tmp_path / "gop.mp4", counter_frame, gop=10)
    seeks: list[float | None] = []
    decode = video_frames.decode_frames

    def spy(container, stream, path, seek=None):
        seeks.append(seek)
        return decode(container, stream, path, seek)

    monkeypatch.setattr(video_frames, "_SEEK_AHEAD", 0.3)
    monkeypatch.setattr(video_frames, "decode_frames", spy)
    frames = read_frames(path, [1.5, 0.1, 1.52, 1.7])
    np.testing.assert_allclose(grey_levels(frames), [level(k) for k in (37, 2, 38, 42)],
                               atol=1.5)
    assert seeks == [None, 1.5]  # decoded from the start to 0.1, then one seek
    seeks.clear()
    frames = read_frames(path, [1.2, 1.0])
    np.testing.assert_allclose(grey_levels(frames), [level(30), level(25)], atol=1.5)
    assert seeks == [1.0]


def test_read_frames_rejects_nan(videos):
    with pytest.raises(ValueError, match="NaN"):
        read_frames(videos["counter"], [0.0, math.nan])


def test_crop_players_shape_and_normalisation():
    frames = np.zeros((2, H, W, 3), np.uint8)
    frames[:, 10:70, 10:40] = (255, 0, 0)  # left half of BOX1 red, right half blue
    frames[:, 10:70, 40:70] = (0, 0, 255)
    frames[1, 10:70, 90:150] = (255, 0, 128)  # BOX2 in frame 1 only
    players = [Player(1, BOX1, "vn", "a", None), Player(2, BOX2, None, "b", None)]
    crops = crop_players(frames, players, size=32)
    assert crops.shape == (2, 2, 3, 32, 32) and crops.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1)

    def norm(rgb):
        return ((torch.tensor(rgb, dtype=torch.float32).view(3, 1) / 255 - mean) / std).view(3)

    torch.testing.assert_close(crops[0, 0, :, 5, 2], norm((255, 0, 0)))
    torch.testing.assert_close(crops[0, 0, :, 20, 29], norm((0, 0, 255)))
    torch.testing.assert_close(crops[0, 1, :, 16, 16], norm((0, 0, 0)))
    torch.testing.assert_close(crops[1, 1].mean(dim=(1, 2)), norm((255, 0, 128)))
    assert crop_players(frames, [], size=32).shape == (2, 0, 3, 32, 32)
    with pytest.raises(ValueError, match="does not fit"):
        crop_players(frames, [Player(1, (150, 0, 20, 20), None, "x", None)])


# ----------------------------------------------------------------------------- motion


def test_motion_energy_in_the_moving_box_at_the_right_times(videos):
    players = [Player(1, BOX1, None, "a", None), Player(2, BOX2, None, "b", None),
               Player(3, BOX1, None, "c", (0.0, 0.7))]
    times, energy = motion_energy(videos["motion"], players)
    assert times.shape == (N_FRAMES,) and energy.shape == (3, N_FRAMES)
    assert energy.dtype == np.float32
    np.testing.assert_allclose(times, np.arange(N_FRAMES) / FPS, atol=1e-6)
    flashing = (times > FLASH[0] + 0.02) & (times < FLASH[1] - 0.02)
    still = (times < FLASH[0] - 0.02) | (times > FLASH[1] + 0.02)
    # a 20x20 square swinging black <-> white in a 60x60 box: 1/9 of full scale
    np.testing.assert_allclose(energy[0, flashing], 1 / 9, atol=0.02)
    assert energy[0, still].max() < 0.005 and energy[1].max() < 0.005
    np.testing.assert_allclose(energy[2, times <= 0.7], energy[0, times <= 0.7])
    assert not energy[2, times > 0.7].any()  # outside the player's span


@pytest.mark.parametrize("rate", [50.0, 10.0])
def test_motion_energy_resampled(videos, rate):
    players = [Player(1, BOX1, None, "a", None), Player(2, BOX2, None, "b", None)]
    times, energy = motion_energy(videos["motion"], players, rate=rate)
    n = round(SECONDS * rate)
    np.testing.assert_allclose(times, np.arange(n) / rate)
    assert energy.shape == (2, n)
    inside = (times > FLASH[0] + 0.1) & (times < FLASH[1] - 0.1)
    outside = (times < FLASH[0] - 0.1) | (times > FLASH[1] + 0.1)
    np.testing.assert_allclose(energy[0, inside], 1 / 9, atol=0.02)
    assert energy[0, outside].max() < 0.005 and energy[1].max() < 0.005


def test_motion_energy_downscales_large_frames(tmp_path):
    """A 640x360 video is analysed at 320x180, with the boxes scaled alike."""

    def draw(k: int) -> np.ndarray:
        img = np.zeros((360, 640, 3), np.uint8)
        img[100:200, 400:500] = 255 * (k % 2)
        return img

    path = make_video(tmp_path / "large.mp4", draw, frames=6)
    players = [Player(1, (400, 100, 100, 100), None, "a", None),
               Player(2, (0, 0, 300, 300), None, "b", None)]
    _, energy = motion_energy(path, players)
    np.testing.assert_allclose(energy[0], 1.0, atol=0.02)
    assert energy[1].max() < 0.005


# ----------------------------------------------------------------------------- boxes.json


def test_parse_boxes_resolves_players():
    data = {"players": [
        {"box": [10, 10, 60, 60], "instrument": "Violin", "name": "Anna", "start": 1, "end": 2},
        {"box": [90.4, 10, 60, 60]},
        {"box": [-2, 70, 50, 26], "start": 2.5},  # sticks out by < 2 %: clipped
        {"box": [150, 70, 13, 20], "instrument": "vc"},
    ]}
    p = parse_boxes(data, W, H)
    assert p[0] == Player(1, (10, 10, 60, 60), "vn", "Anna", (1.0, 2.0))
    assert p[1] == Player(2, (90, 10, 60, 60), None, "player2", None)
    assert p[2].box == (0, 70, 48, 26) and p[2].span == (2.5, math.inf)
    assert p[3].box == (150, 70, 10, 20)
    assert [x.label for x in p] == ["player1_vn", "player2", "player3", "player4_vc"]
    # a bare list is pixel units; "relative" is fractions of width and height
    assert parse_boxes([{"box": [10, 10, 60, 60]}], W, H)[0].box == (10, 10, 60, 60)
    rel = parse_boxes({"units": "relative", "players": [{"box": [0.5, 0.25, 0.25, 0.5]}]}, W, H)
    assert rel[0].box == (80, 24, 40, 48)


def test_parse_boxes_tolerates_small_overlap():
    players = parse_boxes([{"box": [0, 0, 40, 40]}, {"box": [30, 30, 40, 40]}], W, H)
    assert len(players) == 2


ok = {"box": [0, 0, 40, 40]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("players", r"boxes\.json: expected a list of players or an object"),
        ([], r"boxes\.json: no players"),
        ({"players": []}, r"boxes\.json: no players"),
        ({"units": "pixels"}, r"boxes\.json: missing \"players\""),
        ({"players": {"box": [0, 0, 1, 1]}}, r"\"players\" must be a list"),
        ({"player": [ok]}, r"boxes\.json: unknown key \"player\"; allowed keys: units, players"),
        ({"units": "percent", "players": [ok]}, r"\"units\" must be \"pixels\" or \"relative\""),
        ([ok, [1, 2, 3, 4]], r"boxes\.json: player 2: expected an object"),
        ([ok, {"name": "x"}], r"boxes\.json: player 2: missing \"box\""),
        ([{"box": "0,0,4,4"}], r"player 1: \"box\" must be a list of 4 numbers"),
        ([{"box": [0, 0, 4]}], r"player 1: \"box\" must be a list of 4 numbers"),
        ([{"box": [0, 0, True, 4]}], r"player 1: \"box\" must be a list of 4 numbers"),
        ([ok, {"box": [100, 20, 0, 40]}],
         r"boxes\.json: player 2: box \[100, 20, 0, 40\] is empty \(width and height must "
         r"be > 0\)"),
        ([{"box": [150, 0, 20, 20]}], r"player 1: box \[150, 0, 20, 20\] lies outside the "
                                      r"160x96 video frame"),
        ([{"box": [0, -10, 20, 20]}], r"player 1: box .* lies outside"),
        ({"units": "relative", "players": [{"box": [0.5, 0.5, 0.6, 0.2]}]},
         r"player 1: box .* lies outside"),
        ({"units": "relative", "players": [{"box": [10, 10, 60, 60]}]},
         r"player 1: box .* outside \[0, 1\]"),
        ([ok, {"box": [20, 0, 40, 40]}],
         r"boxes\.json: players 1 and 2: boxes overlap by 50% of the smaller box"),
        ([ok, {"box": [50, 0, 40, 40], "instrument": "xylophone"}],
         r"boxes\.json: player 2: unknown instrument 'xylophone'"),
        ([{"box": [0, 0, 4, 4], "instrument": 3}], r"player 1: \"instrument\" must be a code"),
        ([{"box": [0, 0, 4, 4], "instrumnet": "vn"}],
         r"player 1: unknown key \"instrumnet\"; allowed keys: box, instrument, name, start, end"),
        ([{"box": [0, 0, 4, 4], "start": 3, "end": 3}],
         r"player 1: \"start\" \(3 s\) must be before \"end\" \(3 s\)"),
        ([{"box": [0, 0, 4, 4], "start": 5, "end": 2}], r"must be before \"end\""),
        ([{"box": [0, 0, 4, 4], "start": -1}], r"\"start\" must be a number of seconds >= 0"),
        ([{"box": [0, 0, 4, 4], "end": "10"}], r"\"end\" must be a number of seconds"),
        ([{"box": [0, 0, 4, 4], "name": ""}], r"\"name\" must be a non-empty string"),
    ],
)
def test_parse_boxes_errors(data, message):
    with pytest.raises(CusepError, match=message) as e:
        parse_boxes(data, W, H)
    assert "\n" not in str(e.value)


def test_load_boxes(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"units": "pixels", "players": [{"box": [1, 2, 30, 40]}]}))
    assert load_boxes(path, W, H) == (Player(1, (1, 2, 30, 40), None, "player1", None),)
    path.write_text('{\n  "players": [\n    {"box": [1, 2, 30, 40],}\n  ]\n}\n')
    with pytest.raises(CusepError, match=r"boxes\.json: invalid JSON at line 3, column \d+"):
        load_boxes(path, W, H)
    path.write_text('[{"box": [1, 2, 0, 40]}]')
    with pytest.raises(CusepError, match=r"boxes\.json: player 1: box \[1, 2, 0, 40\] is empty"):
        load_boxes(path, W, H)
    with pytest.raises(CusepError, match=r"nope\.json: file not found"):
        load_boxes(tmp_path / "nope.json", W, H)
    path.write_text("  \n")
    with pytest.raises(CusepError, match=r"boxes\.json: is empty"):
        load_boxes(path, W, H)
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CusepError, match=r"boxes\.json: is nested too deeply"):
        load_boxes(path, W, H)


# ----------------------------------------------------------------------------- overlay


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_write_overlay_draws_boxes_and_keeps_audio(videos, tmp_path):
    players = [Player(1, BOX1, "vn", "Anna", None), Player(2, BOX2, None, "player2", (0.0, 1.0))]
    dst = tmp_path / "out" / "overlay.mp4"
    write_overlay(videos["counter"], dst, players, {1: "Anna (violin)"})
    info = video_info(dst)
    assert (info.width, info.height, info.has_audio) == (W, H, True)
    assert count_frames(dst) == N_FRAMES
    assert info.duration == pytest.approx(SECONDS, abs=0.05)
    early, late = read_frames(dst, [0.2, 1.6])
    red = np.array(video_overlay._COLOURS[0], float)
    green = np.array(video_overlay._COLOURS[1], float)
    # box outlines: 2 px thick; player 2 only inside its span
    assert np.abs(early[40, BOX1[0]].astype(float) - red).max() < 40
    assert np.abs(early[40, BOX2[0]].astype(float) - green).max() < 40
    assert np.abs(late[40, BOX2[0]].astype(float) - level(40)).max() < 8
    # the label bar sits above the box (or at its top): it is not the frame's grey
    assert np.abs(early[BOX1[1] + 3, BOX1[0] + 10].astype(float) - level(5)).max() > 30
    assert list(tmp_path.joinpath("out").iterdir()) == [dst]


def test_write_overlay_without_audio_and_reencoded_audio(videos, tmp_path):
    player = [Player(1, (4, 4, 30, 30), None, "p", None)]
    write_overlay(videos["motion"], tmp_path / "silent.mp4", player, {})
    assert video_info(tmp_path / "silent.mp4").has_audio is False
    write_overlay(videos["pcm"], tmp_path / "pcm.mp4", player, {})  # PCM cannot go in mp4
    with av.open(str(tmp_path / "pcm.mp4")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    assert count_frames(tmp_path / "pcm.mp4") == 10


def test_write_overlay_leaves_nothing_on_failure(videos, tmp_path, monkeypatch):
    dst = tmp_path / "overlay.mp4"
    dst.write_bytes(b"old")
    calls = []

    def broken(*args):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(video_overlay, "_draw", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_overlay(videos["counter"], dst, [Player(1, BOX1, None, "p", None)], {})
    assert dst.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]
    monkeypatch.undo()
    with pytest.raises(CusepError, match=r"out\.xyz: cannot write \.xyz videos"):
        write_overlay(videos["counter"], tmp_path / "out.xyz", [], {})
    with pytest.raises(CusepError, match=r"is the input video"):
        write_overlay(videos["counter"], videos["counter"], [], {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]
