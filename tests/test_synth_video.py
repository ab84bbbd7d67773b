"""``cusep synth --video``: Vid_*.mp4 + boxes.json per piece, motion driven by each player's notes.

The controlled tests draw and encode videos from hand-written event lists (PyAV only); the
end-to-end tests render a tiny set with the configuration of ``test_synth`` (skipped like it
when fluidsynth, TimGM6mb or music21 are missing).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

av = pytest.importorskip("av")

from cusep.data.synth_video import (  # noqa: E402
    FPS,
    boxes_json,
    frame_count,
    iter_frames,
    make_scene,
    player_motion,
    render_piece_video,
    write_video,
)
from cusep.errors import CusepError  # noqa: E402


def _notes(*spans: tuple[float, float], vel: int = 100, pitch: int = 60) -> list[tuple]:
    """cusep synth events (seconds, order, args) of notes ``(on, off)`` with slow expression."""
    events = []
    for on, off in spans:
        events += [(on, 2, ("note_on", pitch, vel)), (off, 1, ("note_off", pitch, 0))]
    events += [(t, 0, ("control_change", 11, int(90 + 30 * np.sin(t))))
               for t in np.arange(0.0, 4.0, 0.05)]
    return events


# player 1 plays at 0.5, 1.5, 2.5 s; player 2 at 1.0, 2.2 s (a chord: two pitches at once)
P1 = [(0.5, 0.8), (1.5, 1.8), (2.5, 2.8)]
P2 = [(1.0, 1.3), (2.2, 2.5)]
EVENTS = [_notes(*P1), _notes(*P2, vel=70) + _notes(*P2, vel=70, pitch=64)[: 2 * len(P2)]]
CODES = ("vn", "tba")
SECONDS = 3.6


def _energy(frames: np.ndarray, boxes: list[list[int]]) -> np.ndarray:
    """(players, frames) mean absolute grey difference to the previous frame inside each box."""
    grey = frames.astype(np.float64).mean(axis=3)
    diff = np.abs(np.diff(grey, axis=0, prepend=grey[:1]))
    return np.stack([diff[:, y:y + h, x:x + w].mean(axis=(1, 2)) for x, y, w, h in boxes])


def _raw_frames(codes, events, seconds: float, seed: int) -> np.ndarray:
    scene = make_scene(codes, seed)
    n = frame_count(seconds)
    motions = [player_motion(ev, n) for ev in events]
    return np.stack([f.copy() for f in iter_frames(scene, motions, n)])


def _decode_video(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _decode_audio(path: Path) -> tuple[np.ndarray, int, float]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        duration = float(s.duration * s.time_base)
        x = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
        return x, s.codec_context.sample_rate, duration


def _check_motion(energy: np.ndarray, spans: list[list[tuple[float, float]]],
                  silent_max: float) -> None:
    """Energy rises within 0.1 s of each onset; stays <= silent_max away from the notes."""
    t = np.arange(energy.shape[1]) / FPS
    for k, notes in enumerate(spans):
        peak_after = []
        for on, _ in notes:
            window = (t >= on) & (t <= on + 0.1)
            peak_after.append(energy[k, window].max())
        sounding = np.zeros(len(t), dtype=bool)
        for on, off in notes:
            sounding |= (t >= on - 0.01) & (t <= off + 0.25)
        quiet = energy[k, ~sounding]
        assert min(peak_after) > 0.3, (k, peak_after)
        assert quiet.max() <= silent_max, (k, quiet.max(), min(peak_after))
        assert min(peak_after) > 5 * quiet.max(), (k, peak_after)


def test_scene_boxes_and_looks():
    scene = make_scene(("vn", "va", "vc", "db"), seed=1)
    assert (scene.width, scene.height) == (640, 200)
    data = boxes_json(scene)
    assert data["units"] == "pixels"
    players = data["players"]
    assert [p["name"] for p in players] == ["player1", "player2", "player3", "player4"]
    assert [p["instrument"] for p in players] == ["vn", "va", "vc", "db"]
    for k, p in enumerate(players):
        x, y, w, h = p["box"]
        assert 160 * k <= x and x + w <= 160 * (k + 1) and 0 <= y and y + h <= 200
        assert w > 40 and h > 100
    # bigger instrument, bigger box; same code, same size whatever the seed
    areas = [p["box"][2] * p["box"][3] for p in players]
    assert areas[3] > areas[0]
    other = make_scene(("vn", "tba"), seed=7)
    assert other.figures[0].box[2:] == scene.figures[0].box[2:]
    assert other.width == 320 and other.width % 2 == 0 and other.height % 2 == 0
    # every instrument has a look that fits its cell, all looks differ
    from cusep.instruments import CODES as ALL

    looks = set()
    for i in range(0, len(ALL), 4):
        s = make_scene(ALL[i:i + 4], seed=i)
        frame = next(iter_frames(s, [player_motion([], 1) for _ in s.figures], 1))
        for f in s.figures:
            x, y, w, h = f.box
            looks.add(hashlib.sha1(frame[y:y + h, x:x + w].tobytes()).hexdigest())
    assert len(looks) == len(ALL)
    with pytest.raises(CusepError):
        make_scene((), seed=0)


def test_motion_follows_each_players_own_notes():
    frames = _raw_frames(CODES, EVENTS, SECONDS, seed=3)
    boxes = [list(f.box) for f in make_scene(CODES, 3).figures]
    energy = _energy(frames, boxes)
    assert energy.shape == (2, frame_count(SECONDS))
    _check_motion(energy, [P1, P2], silent_max=0.0)  # drawn frames: silent = exactly still
    # loudness: a louder note sways and brightens more (same onsets)
    soft = _energy(_raw_frames(CODES[:1], [_notes(*P1, vel=30)], SECONDS, 3), boxes[:1])
    loud = _energy(_raw_frames(CODES[:1], [_notes(*P1, vel=120)], SECONDS, 3), boxes[:1])
    assert loud.sum() > soft.sum()


def test_arm_swings_and_silence_is_still():
    n = frame_count(2.0)
    idle = player_motion([], n)
    assert np.all(idle.arm == -1) and np.all(idle.loudness == 0)
    m = player_motion(_notes((0.4, 0.9), (1.2, 1.25)), n)
    t = np.arange(n) / FPS
    assert np.all(m.arm[t < 0.4] == -1) and m.arm[(t > 0.56) & (t < 1.2)].min() == 1.0
    assert m.arm[-1] == -1.0  # second onset swings back
    assert np.all(m.loudness[t < 0.4] == 0) and m.loudness[(t > 0.45) & (t < 0.85)].min() > 0.5
    assert np.all(m.loudness[(t > 1.5)] == 0)


def test_encoded_video_frames_audio_and_determinism(tmp_path):
    rate = 11025
    rng = np.random.default_rng(0)
    mix = np.round(rng.standard_normal(int(SECONDS * rate)) * 4000).astype(np.int32)
    (tmp_path / "a").mkdir()
    rec = render_piece_video(tmp_path / "a", "0001_x_vn_tba", CODES, EVENTS, mix, rate, 3)
    video = tmp_path / "a" / "Vid_0001_x_vn_tba.mp4"
    assert rec == {"file": video.name, "boxes": "boxes.json", "fps": 25, "width": 320,
                   "height": 200, "frames": frame_count(SECONDS), "audio_rate": rate}
    with av.open(str(video)) as c:
        (vs,) = c.streams.video
        assert vs.codec_context.name == "h264" and c.streams.audio[0].codec_context.name == "aac"
        assert vs.codec_context.pix_fmt == "yuv420p"
    frames = _decode_video(video)
    assert abs(len(frames) - SECONDS * FPS) <= 1 and frames.shape[1:] == (200, 320, 3)
    raw = _raw_frames(CODES, EVENTS, SECONDS, seed=3)
    assert np.abs(frames.astype(int) - raw).mean() < 4  # h264 at crf 28 stays close
    boxes = [p["box"] for p in json.loads((tmp_path / "a" / "boxes.json").read_text())["players"]]
    energy = _energy(frames, boxes)
    _check_motion(energy, [P1, P2], silent_max=0.3)
    audio, sr, duration = _decode_audio(video)
    assert sr == rate and abs(duration - len(mix) / rate) < 0.05
    ref = mix / 32768.0
    assert len(audio) >= len(ref)
    assert np.corrcoef(audio[:len(ref)], ref)[0, 1] > 0.9
    # same seed: same boxes and same decoded frames
    (tmp_path / "b").mkdir()
    render_piece_video(tmp_path / "b", "0001_x_vn_tba", CODES, EVENTS, mix, rate, 3)
    boxes_a, boxes_b = ((tmp_path / d / "boxes.json").read_bytes() for d in "ab")
    assert boxes_a == boxes_b
    assert np.array_equal(_decode_video(tmp_path / "b" / video.name), frames)
    other = _raw_frames(CODES, EVENTS, SECONDS, seed=4)
    assert not np.array_equal(other, raw)


def test_audio_rate_that_aac_lacks_is_resampled(tmp_path):
    t = np.arange(int(1.0 * 20000)) / 20000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    scene = make_scene(("fl",), 0)
    out = tmp_path / "v.mp4"
    rate = write_video(out, iter_frames(scene, [player_motion([], 25)], 25), 25, scene.width,
                       scene.height, tone, 20000)
    assert rate == 44100
    audio, sr, duration = _decode_audio(out)
    assert sr == 44100 and abs(duration - 1.0) < 0.05
    spectrum = np.abs(np.fft.rfft(audio[4410:39690]))
    assert abs(np.argmax(spectrum) * 44100 / len(audio[4410:39690]) - 440) < 3


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def synth_tests():
    """The synth test module (its tiny config); skips when fluidsynth or TimGM6mb is missing."""
    import test_synth

    return test_synth


@pytest.fixture(scope="module")
def video_set(synth_tests, tmp_path_factory):
    from cusep.data.synth import render_dataset

    config = replace(synth_tests.SMALL, max_pieces=2, excerpt_seconds=4.0, video=True)
    out = tmp_path_factory.mktemp("synth_video") / "set"
    cache = tmp_path_factory.mktemp("cusep_video") / "scores"
    manifest = render_dataset(out, config, progress=False, cache_dir=cache)
    return out, manifest, config, cache


def test_synth_video_set(video_set):
    out, manifest, _, _ = video_set
    assert manifest["config"]["video"] is True and len(manifest["pieces"]) == 2
    assert "Vid_<piece>.mp4" in (out / "README.md").read_text()
    for piece in manifest["pieces"]:
        folder = out / piece["name"]
        rec = piece["video"]
        video = folder / f"Vid_{piece['name']}.mp4"
        assert rec["file"] == video.name and video.is_file()
        mix, sr = sf.read(folder / f"AuMix_{piece['name']}.wav")
        frames = _decode_video(video)
        assert abs(len(frames) - piece["duration_s"] * FPS) <= 1 and len(frames) == rec["frames"]
        height, width = frames.shape[1:3]
        assert (width, height) == (rec["width"], rec["height"]) == (160 * len(piece["players"]),
                                                                     200)
        audio, rate, duration = _decode_audio(video)
        assert rate == sr and abs(duration - len(mix) / sr) < 0.05
        assert np.corrcoef(audio[:len(mix)], mix)[0, 1] > 0.9
        boxes = json.loads((folder / "boxes.json").read_text())
        seps = sorted(folder.glob("AuSep_*.wav"),
                      key=lambda p: int(p.name.split("_")[1]))
        codes = [re.match(r"AuSep_\d+_([a-z]+)_", p.name).group(1) for p in seps]
        assert [p["instrument"] for p in boxes["players"]] == codes
        assert [p["name"] for p in boxes["players"]] == [f"player{k}"
                                                          for k in range(1, len(codes) + 1)]
        for p in boxes["players"]:
            x, y, w, h = p["box"]
            assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0
        # every player moves while the piece plays, nobody moves in the final second of decay
        energy = _energy(frames, [p["box"] for p in boxes["players"]])
        t = np.arange(len(frames)) / FPS
        assert np.all(energy[:, t < piece["duration_s"] - 1.0].max(axis=1) > 0.3)
        assert energy[:, t > piece["duration_s"] - 0.6].max() < 0.3


def test_video_changes_options_and_resume(video_set, tmp_path):
    from cusep.data.synth import _prepare_out_dir, render_dataset

    out, _, config, cache = video_set
    with pytest.raises(CusepError, match=r"other options \(video\)"):
        render_dataset(out, replace(config, resume=True, video=False), progress=False,
                       cache_dir=cache)
    # a set rendered before --video existed (no "video" key) resumes without video
    old = tmp_path / "old"
    old.mkdir()
    options = json.loads((out / "synth_config.json").read_text())
    del options["video"]
    (old / "synth_config.json").write_text(json.dumps(options))
    _prepare_out_dir(old, replace(config, resume=True, video=False))
    assert json.loads((old / "synth_config.json").read_text())["video"] is False
    with pytest.raises(CusepError, match=r"other options \(video\)"):
        _prepare_out_dir(old, replace(config, resume=True, video=True))


def test_cli_video_flag(monkeypatch, tmp_path):
    import typer
    from typer.testing import CliRunner

    import cusep.data.synth as synth
    from cusep.cli import synth as synth_cli

    seen = []
    monkeypatch.setattr(synth, "render_dataset",
                        lambda out, config, progress: seen.append(config) or {
                            "pieces": [], "minutes_per_instrument": {}})
    app = typer.Typer()
    synth_cli.register(app)
    app.command("other")(lambda: None)
    runner = CliRunner()
    assert runner.invoke(app, ["synth", str(tmp_path / "a"), "--video"]).exit_code == 0
    assert runner.invoke(app, ["synth", str(tmp_path / "b")]).exit_code == 0
    assert [c.video for c in seen] == [True, False]
    help_text = runner.invoke(app, ["synth", "--help"]).output
    assert "--video" in help_text and "boxes.json" in help_text


def test_rendered_videos_go_through_the_three_paths(video_set, tmp_path, capsys):
    """Each rendered piece: its boxes name the instruments (path a, default model); without the
    names, the motion in each box picks the player's own true stem (path b's matching, every
    player right); and a visual model separates it from the crops (path c)."""
    from videos import tiny_visual

    from cusep.checkpoint import save_model_dir
    from cusep.cli import main
    from cusep.data.urmp import scan_urmp
    from cusep.evaluate import load_sources
    from cusep.video_separate import InstrumentPlan, assign_players, open_video

    out, _, _, _ = video_set
    visual = tiny_visual("final-multiply")
    visual_dir = save_model_dir(tmp_path / "visual", visual, visual.config)
    for piece in scan_urmp(out):
        boxes = piece.folder / "boxes.json"
        truth = [p["instrument"] for p in json.loads(boxes.read_text())["players"]]
        video = open_video(piece.video, boxes)
        video = replace(video, players=tuple(replace(p, code=None) for p in video.players))
        sources, codes, _ = load_sources(piece)
        n = video.audio.shape[-1]
        stems = np.pad(sources, ((0, 0), (0, max(0, n - sources.shape[-1]))))[:, None, :n]
        plan = assign_players(video, InstrumentPlan(codes, "motion", {}, ("motion",) * len(truth)),
                              stems)
        assert [plan.code_of(i) for i in range(len(truth))] == truth, piece.name
        for model, folder in ((None, "a"), (visual_dir, "c")):
            args = ["separate", str(piece.video), "--boxes", str(boxes), "-o",
                    str(tmp_path / folder), "-d", "cpu"]
            with pytest.raises(SystemExit) as info:
                main(args + (["-m", str(model), "--precision", "fp32"] if model else []))
            assert not info.value.code, capsys.readouterr().err
            written = sorted(p.name for p in (tmp_path / folder / piece.video.stem).iterdir())
            assert written == [f"player{k}_{c}.wav" for k, c in enumerate(truth, start=1)]
