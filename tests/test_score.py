"""Scores (MIDI, MusicXML) read into parts, and their alignment to a recording by DTW."""

from __future__ import annotations

import re
from pathlib import Path

import mido
import numpy as np
import pytest

import cusep.align as align_mod
from cusep.align import aligned_score, dtw
from cusep.cli import main
from cusep.errors import CusepError
from cusep.score import Score, ScoreNote, ScorePart, read_score, write_midi

RATE = 22050


def melody(low: int, high: int, seconds: float, seed: int) -> tuple[ScoreNote, ...]:
    rng = np.random.default_rng(seed)
    t, notes = 0.0, []
    while t < seconds:
        d = float(rng.choice([0.25, 0.5, 0.5, 1.0]))
        notes.append(ScoreNote(t, t + 0.95 * d, int(rng.integers(low, high))))
        t += d
    return tuple(notes)


def duet(seconds: float, seed: int = 1) -> Score:
    return Score(Path("duet.mid"), (ScorePart("Violin", 40, "vn", melody(67, 84, seconds, seed)),
                                    ScorePart("Cello", 42, "vc", melody(40, 55, seconds,
                                                                        seed + 1))))


def warp(t: np.ndarray) -> np.ndarray:
    """A performance: 0.5 s late, 5 % slower, with a slow rubato of +-0.6 s."""
    return 0.5 + 1.05 * t + 0.6 * np.sin(2 * np.pi * t / 13.0)


def render(score: Score, time_map=warp, seed: int = 0) -> np.ndarray:
    """Harmonic tones with plucked envelopes at the warped times, plus a little noise."""
    n = int((time_map(np.array([score.duration]))[0] + 1.0) * RATE)
    x = np.zeros(n)
    for part in score.parts:
        for note in part.notes:
            a, b = (int(v * RATE) for v in time_map(np.array([note.onset, note.offset])))
            t = np.arange(b - a) / RATE
            f0 = 440 * 2 ** ((note.pitch - 69) / 12)
            env = np.minimum(1, t / 0.02) * np.exp(-1.5 * t)
            x[a:b] += 0.1 * env * sum(np.sin(2 * np.pi * h * f0 * t) / h**1.2 for h in range(1, 8))
    x += np.random.default_rng(seed).standard_normal(n) * 0.002
    return x.astype(np.float32)


def onsets(score: Score) -> np.ndarray:
    return np.array([n.onset for p in score.parts for n in p.notes])


def write_test_midi(path: Path, tracks: list[tuple[str, int, list[tuple[float, float, int]]]],
                    tempo: int = 500000, tempo_change: tuple[float, int] | None = None) -> Path:
    """tracks: (name, program, [(onset beats, length beats, pitch)]) -> a type-1 MIDI file."""
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    head = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    if tempo_change:
        head.append(mido.MetaMessage("set_tempo", tempo=tempo_change[1],
                                     time=int(tempo_change[0] * 480)))
    mid.tracks.append(head)
    for ch, (name, program, notes) in enumerate(tracks):
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0),
                                mido.Message("program_change", channel=ch, program=program)])
        events = sorted([(int(on * 480), 1, p) for on, _, p in notes]
                        + [(int((on + ln) * 480), 0, p) for on, ln, p in notes])
        now = 0
        for tick, is_on, p in events:
            track.append(mido.Message("note_on" if is_on else "note_off", channel=ch, note=p,
                                      velocity=90 if is_on else 0, time=tick - now))
            now = tick
        mid.tracks.append(track)
    mid.save(str(path))
    return path


# ----------------------------------------------------------------------------- reading


def test_midi_parts_programs_and_tempo_map(tmp_path):
    path = write_test_midi(tmp_path / "q.mid", [
        ("Violin I", 40, [(0, 1, 76), (1, 1, 74), (4, 2, 72)]),
        ("Cello", 42, [(0, 4, 48), (4, 2, 43)]),
        ("Piano-named viola", 41, [(2, 1, 60)]),
    ], tempo=500000, tempo_change=(4, 1000000))  # 120 bpm, then 60 bpm from beat 4
    score = read_score(path)
    assert [p.code for p in score.parts] == ["vn", "vc", "va"]
    vn = score.parts[0].notes
    assert [(n.onset, n.offset, n.pitch) for n in vn] == [(0.0, 0.5, 76), (0.5, 1.0, 74),
                                                          (2.0, 4.0, 72)]
    assert score.duration == pytest.approx(4.0)
    assert set(score.sources()) == {"vn", "vc", "va"}


def test_instruments_in_part_order_and_merged_sources(tmp_path):
    path = write_test_midi(tmp_path / "q.mid", [
        ("Part 1", 0, [(0, 1, 76)]), ("Part 2", 0, [(1, 1, 72)]), ("Part 3", 0, [(0, 2, 48)]),
    ])
    score = read_score(path, "vn,violin,vc")
    assert [p.code for p in score.parts] == ["vn", "vn", "vc"]
    assert [n.pitch for n in score.sources()["vn"]] == [76, 72]  # two players, one source


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"MThd\x00\x00\x00\x06garbage")
    return path


def _text(path: Path) -> Path:
    path = path.with_suffix(".txt")
    path.write_text("x")
    return path


@pytest.mark.parametrize(("make", "kwargs", "needle"), [
    (lambda p: write_test_midi(p, [("Piano", 0, [(0, 1, 60)])]), {},
     "part 1 ('Piano', MIDI program 0) is not one of the 13"),
    (lambda p: write_test_midi(p, [("Violin", 40, [(0, 1, 70)]), ("Cello", 42, [(0, 1, 48)])]),
     {"instruments": "vn"}, "has 2 part(s) with notes but --instruments names 1"),
    (lambda p: write_test_midi(p, [("Violin", 40, [])]), {}, "holds no notes"),
    (_corrupt, {}, "not a readable MIDI file"),
    (_text, {}, "unknown score format"),
])
def test_bad_scores_are_one_line(tmp_path, make, kwargs, needle):
    path = make(tmp_path / "bad.mid")
    with pytest.raises(CusepError, match=re.escape(needle)) as err:
        read_score(path, **kwargs)
    assert "\n" not in str(err.value)


def test_musicxml_parts_by_instrument(tmp_path):
    music21 = pytest.importorskip("music21")
    s = music21.stream.Score()
    for inst, pitches in ((music21.instrument.Violin(), ["E5", "D5", "C5"]),
                          (music21.instrument.Violoncello(), ["C3", "G2"])):
        part = music21.stream.Part()
        part.insert(0, inst)
        part.append(music21.tempo.MetronomeMark(number=60))
        for name in pitches:
            part.append(music21.note.Note(name, quarterLength=1.0))
        s.insert(0, part)
    path = Path(s.write("musicxml", fp=str(tmp_path / "duo.musicxml")))
    score = read_score(path)
    assert [p.code for p in score.parts] == ["vn", "vc"]
    assert [(n.onset, n.pitch) for n in score.parts[0].notes] == [(0.0, 76), (1.0, 74),
                                                                  (2.0, 72)]


def test_write_midi_round_trips(tmp_path):
    score = duet(6.0)
    write_midi(score, tmp_path / "out.mid")
    back = read_score(tmp_path / "out.mid")
    assert [p.code for p in back.parts] == ["vn", "vc"]
    np.testing.assert_allclose(onsets(back), onsets(score), atol=1.5e-3)


# ----------------------------------------------------------------------------- alignment


def test_a_warped_rendering_aligns_back():
    score = duet(40.0, seed=3)
    audio = render(score)
    aligned, result = aligned_score(score, audio, RATE, "notes")
    assert result.reference == "made from the notes"
    truth = warp(onsets(score))
    error = np.abs(onsets(aligned) - truth)
    assert np.median(np.abs(onsets(score) - truth)) > 1.0  # unaligned, it is far off
    assert np.median(error) < 0.05
    other = duet(40.0, seed=11)  # another piece of the same kind: a worse fit
    assert aligned_score(other, audio, RATE, "notes")[1].confidence < result.confidence - 0.05


def test_a_rendered_score_aligns_a_performance_in_another_soundfont(tmp_path):
    from cusep.align import render_font
    from cusep.data.synth import RENDER_RATE, render_midi, resolve_font

    font = render_font()
    if font is None or font.name != "FluidR3_GM.sf2":
        pytest.skip("needs fluidsynth and fluid-soundfont-gm (the README's test line)")
    player = resolve_font("timgm6mb")  # the performance: other samples than the reference's
    score = duet(60.0, seed=5)
    write_midi(score.warped(warp), tmp_path / "take.mid")
    audio = render_midi(tmp_path / "take.mid", tmp_path / "take.wav", player)
    aligned, result = aligned_score(score, audio.astype(np.float32), RENDER_RATE)
    assert result.reference == "rendered with FluidR3_GM.sf2"
    assert np.median(np.abs(onsets(aligned) - warp(onsets(score)))) < 0.05
    wrong = aligned_score(duet(60.0, seed=55), audio.astype(np.float32), RENDER_RATE)[1]
    assert wrong.confidence < result.confidence - 0.05


def test_multiscale_dtw_follows_the_full_one(monkeypatch):
    score = duet(60.0, seed=5)
    audio = render(score)
    fa = align_mod.score_features(score)
    fb = align_mod.audio_features(audio, RATE)
    full = dtw(fa, fb)
    monkeypatch.setattr(align_mod, "_FULL_CELLS", 50_000)  # three levels coarser
    coarse = dtw(fa, fb)
    assert coarse[0].tolist() == [0, 0] and coarse[-1].tolist() == [len(fa) - 1, len(fb) - 1]
    assert (np.diff(coarse, axis=0) >= 0).all() and (np.abs(np.diff(coarse, axis=0)) <= 1).all()

    def mean_at(path):  # recording frame per score frame
        return np.bincount(path[:, 0], weights=path[:, 1]) / np.bincount(path[:, 0])

    assert np.median(np.abs(mean_at(coarse) - mean_at(full))) <= 1.0


def test_cli_align_writes_the_aligned_score(tmp_path, capsys):
    import soundfile as sf

    score = duet(20.0, seed=7)
    write_midi(score, tmp_path / "score.mid")
    sf.write(tmp_path / "take.wav", render(score), RATE)
    out = tmp_path / "aligned.mid"
    with pytest.raises(SystemExit) as stop:
        main(["align", str(tmp_path / "take.wav"), "--score", str(tmp_path / "score.mid"),
              "-o", str(out), "--reference", "notes"])
    assert stop.value.code in (0, None)
    err = capsys.readouterr().err
    assert "aligned" in err and "confidence" in err
    error = np.abs(onsets(read_score(out)) - warp(onsets(score)))
    assert np.median(error) < 0.05
    for args, needle in (([], "exists; use --force"),
                         (["--force", "-i", "vn"], "names 1"),
                         (["--force", "--score", str(tmp_path / "take.wav")],
                          "unknown score format"),
                         (["--force", "--reference", "guess"], "unknown --reference")):
        before = out.read_bytes()
        with pytest.raises(SystemExit) as stop:
            main(["align", str(tmp_path / "take.wav"), "--score", str(tmp_path / "score.mid"),
                  "-o", str(out), *args])
        err = capsys.readouterr().err
        assert stop.value.code == 1 and needle in err and "Traceback" not in err, err
        assert out.read_bytes() == before


def test_separate_with_a_score_silences_stems_where_their_parts_rest(tmp_path, capsys,
                                                                     short_model_dir):
    import soundfile as sf

    violin = ScorePart("Violin", 40, "vn", melody(67, 84, 5.0, 1))
    cello = ScorePart("Cello", 42, "vc", tuple(ScoreNote(n.onset + 6.0, n.offset + 6.0, n.pitch)
                                               for n in melody(40, 55, 5.0, 2)))
    score = Score(tmp_path / "turns.mid", (violin, cello))  # violin, then cello alone
    write_midi(score, tmp_path / "turns.mid")
    sf.write(tmp_path / "take.wav", render(score), RATE)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main(["separate", str(tmp_path / "take.wav"), "--score", str(tmp_path / "turns.mid"),
              "-m", str(short_model_dir), "-o", str(out), "-f", "float32"])
    err = capsys.readouterr().err
    assert stop.value.code in (0, None), err
    assert "aligned to" in err and "confidence" in err and "vn, vc (from the score)" in err
    vn, _ = sf.read(out / "take" / "vn.wav")
    vc, _ = sf.read(out / "take" / "vc.wav")
    mix, _ = sf.read(tmp_path / "take.wav")
    np.testing.assert_allclose(vn + vc, mix, atol=1e-4)  # still the mixture, split
    cello_alone = slice(int(warp(np.array([7.0]))[0] * RATE), int(warp(np.array([10.5]))[0]
                                                                    * RATE))
    assert np.abs(vn[cello_alone]).max() < 1e-3 * np.abs(mix[cello_alone]).max()
    for args, needle in ((["-i", "vn,va"], "the score's parts are vn, vc"),
                         (["--start", "1"], "--score aligns a whole audio recording")):
        with pytest.raises(SystemExit) as stop:
            main(["separate", str(tmp_path / "take.wav"), "--score",
                  str(tmp_path / "turns.mid"), "-m", str(short_model_dir), "-o",
                  str(tmp_path / "o2"), *args])
        err = capsys.readouterr().err
        assert stop.value.code == 1 and needle in err and "Traceback" not in err, err
        assert not (tmp_path / "o2").exists()


def test_urmp_note_lists_read_into_a_part(tmp_path):
    from cusep.score import onset_error, read_note_list

    path = tmp_path / "Notes_1_vn_01_Jupiter.txt"
    path.write_text("0.512\t440.00\t0.250\n\n1.000  329.63  0.5\n0.100\t445.1\t0.2\n")
    part = read_note_list(path, "vn")
    assert part.code == "vn" and part.program == 40
    assert [(n.onset, n.pitch) for n in part.notes] == [(0.1, 69), (0.512, 69), (1.0, 64)]
    assert part.notes[2].offset == pytest.approx(1.5)
    moved = Score(path, (part,)).warped(lambda t: t + 0.02)
    assert onset_error(moved, Score(path, (part,))) == pytest.approx(0.02)
    fewer = Score(path, (ScorePart("vn", 40, "vn", moved.parts[0].notes[1:]),))
    assert onset_error(fewer, Score(path, (part,))) == pytest.approx(0.02)  # nearest same pitch
    for text, needle in (("0.5 440\n", "line 1 is not 'onset frequency duration'"),
                         ("0.5 abc 0.2\n", "line 1"), ("1 -3 0.2\n", "line 1"),
                         ("\n \n", "holds no notes")):
        path.write_text(text)
        with pytest.raises(CusepError, match=re.escape(needle)):
            read_note_list(path, "vn")
    with pytest.raises(CusepError, match="cannot read"):
        read_note_list(tmp_path / "missing.txt", "vn")
