"""``cusep separate VIDEO --boxes``: the three ways from boxes to per-player stems, the motion
match on a decoded video, and every bad input as one line with nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from videos import boxes_json, onset_times, players_scene, tiny_visual, tone, write_video

from cusep.video import load_boxes, video_info
from cusep.video_separate import InstrumentPlan, assign_players, open_video

SECONDS = 6.0


@pytest.fixture(scope="module")
def duet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-player video: player 1 (low notes) and player 2 (high notes) move at their onsets."""
    root = tmp_path_factory.mktemp("duet")
    onsets = [onset_times(SECONDS, 1), onset_times(SECONDS, 2)]
    stems = np.stack([tone(onsets[0], SECONDS, 130.0, 1), tone(onsets[1], SECONDS, 520.0, 2)])
    path = write_video(root / "duet.mp4", players_scene(onsets, SECONDS), audio=stems.sum(0)[None])
    return {"path": path, "stems": stems, "root": root}


def boxes_file(folder: Path, data: object, name: str = "boxes.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_boxes_with_instruments_give_player_stems(cli, tmp_path, duet, tiny_model_dir):
    boxes = boxes_file(tmp_path, boxes_json(2, ["vc", "vn"]))
    code, out, err = cli("separate", duet["path"], "--boxes", boxes, "-m", tiny_model_dir,
                         "-o", tmp_path / "out", "-d", "cpu")
    assert code == 0, err
    assert "instruments named in the boxes" in out + err
    folder = tmp_path / "out" / "duet"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["player1_vc.wav", "player2_vn.wav"]
    a, rate = sf.read(folder / "player1_vc.wav", always_2d=True)
    b, _ = sf.read(folder / "player2_vn.wav", always_2d=True)
    mix, mix_rate = sf.read(_audio_of(duet["path"], tmp_path), always_2d=True)
    assert rate == mix_rate and a.shape == b.shape == mix.shape
    np.testing.assert_allclose(a + b, mix, atol=2e-3)  # stems sum to the video's audio


def _audio_of(video: Path, tmp_path: Path) -> Path:
    from cusep.audio import read_audio, write_audio

    audio, rate = read_audio(video)
    out = tmp_path / "audio.wav"
    write_audio(out, audio, rate, "float32")
    return out


def test_motion_matching_on_a_decoded_video(duet, tmp_path):
    """Given the true stems, the motion in each box picks its own player's stem, whatever the
    order of the stems."""
    boxes = boxes_file(tmp_path, boxes_json(2))
    video = open_video(duet["path"], boxes)
    audio_len = video.audio.shape[-1]
    stems = np.stack([np.pad(s, (0, max(0, audio_len - len(s))))[:audio_len]
                      for s in duet["stems"]])[:, None]
    plan = assign_players(video, InstrumentPlan(("vc", "vn"), "motion", {}, ("motion",) * 2),
                          stems)
    assert plan.stem == (0, 1) and plan.labels() == ("player1_vc", "player2_vn")
    swapped = assign_players(video, InstrumentPlan(("vn", "vc"), "motion", {}, ("motion",) * 2),
                             stems[::-1])
    assert swapped.labels() == ("player1_vc", "player2_vn")
    assert plan.score[0, 0] > plan.score[0, 1] and plan.score[1, 1] > plan.score[1, 0]


def test_boxes_without_instruments_use_motion(cli, tmp_path, duet, tiny_model_dir):
    boxes = boxes_file(tmp_path, boxes_json(2))
    overlay = tmp_path / "overlay.mp4"
    code, out, err = cli("separate", duet["path"], "--boxes", boxes, "-i", "vn,vc",
                         "-m", tiny_model_dir, "-o", tmp_path / "out", "-d", "cpu",
                         "--overlay", overlay)
    assert code == 0, err
    assert "matched to stems by motion" in out + err
    names = sorted(p.name for p in (tmp_path / "out" / "duet").iterdir())
    assert len(names) == 2 and {n.split("_")[1] for n in names} == {"vn.wav", "vc.wav"}
    assert video_info(overlay).frames == video_info(duet["path"]).frames
    line = " ".join(err.split())  # the overlay's time is printed apart from the stems'
    assert re.search(r"2 player stems in \d+\.\d s\), overlay \S+overlay\.mp4 in \d+\.\d s",
                     line), line


def test_two_players_of_one_instrument_share_its_stem(cli, tmp_path, duet, tiny_model_dir):
    data = boxes_json(2, ["vn", "vn"])
    code, out, err = cli("separate", duet["path"], "--boxes", boxes_file(tmp_path, data),
                         "-m", tiny_model_dir, "-o", tmp_path / "out", "-d", "cpu")
    assert code == 0, err
    assert "share its stem" in " ".join((out + err).split())
    folder = tmp_path / "out" / "duet"
    a, _ = sf.read(folder / "player1_vn.wav")
    b, _ = sf.read(folder / "player2_vn.wav")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("data, needles", [
    ("[{\"box\": [0, 0, 10, 10]},", ["boxes.json", "line"]),
    ({"players": [{"box": [0, 0, 0, 40]}]}, ["player 1", "empty"]),
    ({"players": [{"box": [120, 0, 80, 90]}]}, ["player 1", "outside"]),
    ({"players": [{"box": [2, 2, 76, 92]}, {"box": [10, 2, 76, 92]}]}, ["overlap"]),
    ({"players": [{"box": [2, 2, 76, 92], "instrument": "banjo"}]}, ["player 1", "banjo"]),
    ({"players": [{"box": [2, 2, 76, 92], "instrumnet": "vn"}]}, ["instrumnet"]),
])
def test_bad_boxes_are_one_line_and_write_nothing(cli, tmp_path, duet, tiny_model_dir, data,
                                                  needles):
    boxes = boxes_file(tmp_path, data)
    code, out, err = cli("separate", duet["path"], "--boxes", boxes, "-i", "vn,vc",
                         "-m", tiny_model_dir, "-o", tmp_path / "out", "-d", "cpu")
    assert code != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle.lower() in err.lower(), err
    assert not (tmp_path / "out").exists()


def test_bad_video_inputs(cli, tmp_path, duet, tiny_model_dir):
    silent = write_video(tmp_path / "silent.mp4", players_scene([onset_times(2, 0)], 2.0))
    boxes = boxes_file(tmp_path, boxes_json(1, ["vn"]))
    cases = [
        (["separate", silent, "--boxes", boxes], "no audio track"),
        (["separate", duet["path"], duet["path"].with_name("x.mp4"), "--boxes", boxes],
         "one video"),
        (["separate", duet["path"], "-i", "vn", "--overlay", tmp_path / "o.mp4"], "--boxes"),
        (["separate", duet["path"]], "--instruments"),
        (["separate", duet["path"], "--boxes", tmp_path / "missing.json"], "missing.json"),
        (["separate", duet["path"], "--boxes", boxes, "-i", "va,vc"], "agree"),
        (["separate", duet["path"], "--boxes", boxes, "--overlay", duet["path"]], "overwrite"),
        (["separate", duet["path"], "--boxes", boxes, "--overlay", tmp_path / "o.wav"],
         "not a video file name"),
        (["separate", duet["path"], "-i", "vn", "--rest", "--boxes", boxes], "--rest"),
    ]
    for args, needle in cases:
        code, out, err = cli(*args, "-m", tiny_model_dir, "-o", tmp_path / "out", "-d", "cpu")
        assert code != 0, args
        assert needle in err and "Traceback" not in err, (args, err)
        assert not (tmp_path / "out").exists()


def test_relative_boxes_match_pixel_boxes(duet, tmp_path):
    info = video_info(duet["path"])
    pixels = load_boxes(boxes_file(tmp_path, boxes_json(2), "px.json"), info.width, info.height)
    rel = {"units": "relative", "players": [
        {"box": [p.box[0] / info.width, p.box[1] / info.height, p.box[2] / info.width,
                 p.box[3] / info.height]} for p in pixels]}
    relative = load_boxes(boxes_file(tmp_path, rel, "rel.json"), info.width, info.height)
    assert [p.box for p in relative] == [p.box for p in pixels]


@pytest.fixture(scope="module")
def visual_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from cusep.checkpoint import save_model_dir

    model = tiny_visual("final-multiply")
    root = tmp_path_factory.mktemp("visual")
    return save_model_dir(root / "tiny-visual", model, model.config, dtype=torch.float32)


def test_visual_model_names_unnamed_players(cli, tmp_path, duet, visual_model_dir):
    boxes = boxes_file(tmp_path, boxes_json(2, ["vc"]))  # player 2 unnamed
    code, out, err = cli("separate", duet["path"], "--boxes", boxes, "-m", visual_model_dir,
                         "-o", tmp_path / "out", "-d", "cpu", "--precision", "fp32")
    assert code == 0, err
    text = " ".join((out + err).split())
    assert "visual conditioning" in text and "visual" in text
    names = sorted(p.name for p in (tmp_path / "out" / "duet").iterdir())
    assert len(names) == 2 and names[0] == "player1_vc.wav" and names[1].startswith("player2_")


def test_visual_model_with_named_boxes_separates_with_frames(duet, tmp_path, visual_model_dir):
    import cusep

    boxes = boxes_file(tmp_path, boxes_json(2, ["vc", "vn"]))
    stems, plan = cusep.separate_video(duet["path"], boxes, model=visual_model_dir, device="cpu")
    assert plan.method == "visual" and plan.source == ("box", "box")
    assert set(stems) == {"player1_vc", "player2_vn"}
    audio = open_video(duet["path"], boxes).audio
    np.testing.assert_allclose(stems["player1_vc"] + stems["player2_vn"], audio, atol=2e-3)


def test_more_detections_than_boxes_keep_the_most_probable(cli, tmp_path, duet, tiny_model_dir,
                                                            monkeypatch):
    from cusep.detect import DetectionResult, Detector
    from cusep.instruments import CODES

    probs = np.full(len(CODES), 0.01)
    probs[[CODES.index("vn"), CODES.index("vc"), CODES.index("fl")]] = (0.9, 0.6, 0.7)
    result = DetectionResult(CODES, probs, np.zeros(1), probs[None], 0.5)
    monkeypatch.setattr(Detector, "detect", lambda self, audio, rate: result)
    code, out, err = cli("separate", duet["path"], "--boxes", boxes_file(tmp_path, boxes_json(2)),
                         "-m", tiny_model_dir, "-o", tmp_path / "out", "-d", "cpu")
    assert code == 0, err
    text = " ".join((out + err).split())
    assert "detected 3 instruments for 2 boxes" in text and "left out vc" in text
    names = sorted(p.name.split("_")[1] for p in (tmp_path / "out" / "duet").iterdir())
    assert names == ["fl.wav", "vn.wav"]
