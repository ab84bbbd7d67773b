"""``cusep synth``: URMP layout, exact mixes, real GM programs, splits, determinism, resume, errors.

Renders a few short excerpts of Bach chorales with TimGM6mb (needs fluidsynth, the font and
music21; ``.ci`` installs them).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("music21")
pytest.importorskip("mido")
if shutil.which("fluidsynth") is None or not Path("/usr/share/sounds/sf2/TimGM6mb.sf2").is_file():
    pytest.skip("fluidsynth and TimGM6mb are needed", allow_module_level=True)

from cusep.data.scores import list_works, load_work, split_of, work_key  # noqa: E402
from cusep.data.synth import (  # noqa: E402
    INSTALL_COMMAND,
    SynthConfig,
    check_requirements,
    plan_pieces,
    render_dataset,
)
from cusep.errors import CusepError  # noqa: E402
from cusep.instruments import BY_CODE  # noqa: E402

FONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
SMALL = SynthConfig(
    split="test", fonts=("timgm6mb",), sources=("bach",), excerpt_seconds=6.0,
    minutes_per_instrument=0, max_pieces=3, min_players=2, max_players=3, reverb=0.5, seed=3,
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cusep") / "scores"


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, cache) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "set"
    manifest = render_dataset(out, SMALL, progress=False, cache_dir=cache)
    return out, manifest


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_layout_stems_and_mix(small_set):
    out, manifest = small_set
    pieces = manifest["pieces"]
    assert len(pieces) == 3
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [p["name"] for p in pieces]
    for piece in pieces:
        folder = out / piece["name"]
        codes = [pl["code"] for pl in piece["players"]]
        assert re.fullmatch(r"\d{4}_[A-Za-z0-9]+(_[a-z]+){2,3}", piece["name"])
        assert piece["name"].endswith("_" + "_".join(codes))
        assert len(set(codes)) == len(codes)
        number, title = piece["name"].split("_")[:2]
        mix, sr = sf.read(folder / f"AuMix_{piece['name']}.wav")
        assert sr == 11025 and mix.ndim == 1
        assert sf.info(str(folder / f"AuMix_{piece['name']}.wav")).subtype == "PCM_16"
        total = np.zeros_like(mix)
        for k, code in enumerate(codes, start=1):
            stem, sr_k = sf.read(folder / f"AuSep_{k}_{code}_{number}_{title}.wav")
            assert sr_k == sr and stem.shape == mix.shape
            assert np.sqrt(np.mean(stem**2)) > 1e-3, f"silent stem {k} of {piece['name']}"
            total += stem
        assert np.max(np.abs(total - mix)) <= 1e-4
        assert np.max(np.abs(mix)) < 1.0
        assert piece["duration_s"] == pytest.approx(len(mix) / sr, abs=1e-3)
        assert piece["split"] == "test" and split_of(piece["work"]) == "test"
        assert piece["font"] == "timgm6mb" and piece["seed"] >= 0
    card = (out / "README.md").read_text()
    assert "| violin | vn |" in card and "test" in card
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))


def test_reader_sees_the_set(small_set):
    from cusep.data.urmp import scan_urmp

    out, manifest = small_set
    pieces = scan_urmp(out, require_mix=True)
    assert [p.name for p in pieces] == [p["name"] for p in manifest["pieces"]]
    for piece, record in zip(pieces, manifest["pieces"], strict=True):
        assert piece.instruments == tuple(pl["code"] for pl in record["players"])
        assert piece.split == "test"


def test_same_seed_same_bytes_other_seed_differs(small_set, tmp_path, cache):
    out, _ = small_set
    again = tmp_path / "again"  # rendered in 2 processes this time: still the same bytes
    render_dataset(again, replace(SMALL, jobs=2), progress=False, cache_dir=cache)
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    render_dataset(other, replace(SMALL, seed=4, max_pieces=1), progress=False, cache_dir=cache)
    mixes = {p.read_bytes() for p in out.glob("*/AuMix_*.wav")}
    assert next(other.glob("*/AuMix_*.wav")).read_bytes() not in mixes


def test_resume_renders_only_missing_piece(small_set, tmp_path, cache):
    out, manifest = small_set
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    names = [p["name"] for p in manifest["pieces"]]
    shutil.rmtree(copy / names[1])
    (copy / "manifest.json").unlink()
    (copy / f".tmp-{names[1]}").mkdir()  # what an interrupted run leaves behind
    (copy / f".tmp-{names[1]}" / "AuSep_1_vn_x.wav").write_bytes(b"half")
    stamps = {n: (copy / n / f"AuMix_{n}.wav").stat().st_mtime_ns for n in (names[0], names[2])}
    render_dataset(copy, replace(SMALL, resume=True), progress=False, cache_dir=cache)
    for n, stamp in stamps.items():
        assert (copy / n / f"AuMix_{n}.wav").stat().st_mtime_ns == stamp
    assert _files(copy) == _files(out)
    with pytest.raises(CusepError, match="other options"):
        render_dataset(copy, replace(SMALL, resume=True, seed=9), progress=False, cache_dir=cache)
    with pytest.raises(CusepError, match="not empty"):
        render_dataset(copy, SMALL, progress=False, cache_dir=cache)


def _ltas(x: np.ndarray) -> np.ndarray:
    from scipy.signal import stft

    _, _, z = stft(x, nperseg=1024)
    s = np.log(np.abs(z).mean(axis=1) + 1e-6)
    return s - s.mean()


def _reference(notes: list[tuple[float, float, int]], program: int, folder: Path) -> np.ndarray:
    """Render notes (seconds, pitch) with plain MIDI written here, independent of cusep."""
    import mido

    track = mido.MidiTrack([mido.Message("program_change", program=program, time=0)])
    events = sorted([(on, 1, "note_on", p) for on, _, p in notes]
                    + [(off, 0, "note_off", p) for _, off, p in notes])
    now = 0
    for t, _, kind, p in events:
        tick = int(t * 960)
        track.append(mido.Message(kind, note=p, velocity=90 if kind == "note_on" else 0,
                                  time=tick - now))
        now = tick
    mid = mido.MidiFile(ticks_per_beat=480)
    mid.tracks.append(track)
    mid.save(str(folder / f"{program}.mid"))
    subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-r", "11025", "-F",
                    str(folder / f"{program}.wav"), FONT, str(folder / f"{program}.mid")],
                   check=True, capture_output=True)
    x, _ = sf.read(folder / f"{program}.wav")
    return x.mean(axis=1)


def test_stems_use_the_requested_gm_program(tmp_path, cache):
    codes = ("vc", "cl", "tpt", "hn")
    config = replace(SMALL, instruments=codes, min_players=3, max_players=3, max_pieces=1,
                     humanise=False, reverb=0.0, seed=5)
    manifest = render_dataset(tmp_path / "set", config, progress=False, cache_dir=cache)
    (piece,) = manifest["pieces"]
    work = load_work(piece["work"], cache)
    ex = piece["excerpt"]
    for player in piece["players"]:
        notes = [
            ((n.onset - ex["start_quarter"]) * 60 / ex["qpm"],
             (n.onset - ex["start_quarter"] + n.length) * 60 / ex["qpm"],
             n.pitches[0] + 12 * player["octave_shift"])
            for n in work.parts[player["part"]].notes
            if ex["start_quarter"] <= n.onset < ex["end_quarter"]
        ]
        stem, _ = sf.read(next((tmp_path / "set" / piece["name"]).glob(
            f"AuSep_{player['player']}_*.wav")))
        target = _ltas(stem)
        match = {
            c: float(np.corrcoef(target, _ltas(_reference(notes, BY_CODE[c].program, tmp_path)))
                     [0, 1])
            for c in codes
        }
        assert max(match, key=match.get) == player["code"], (player, match)


def test_plan_is_balanced_and_in_range(cache):
    config = replace(SMALL, max_pieces=0, minutes_per_instrument=0.4,
                     excerpt_seconds=10.0, max_players=4)
    plans, works = plan_pieces(config, cache)
    cover = dict.fromkeys(config.instruments, 0.0)
    for plan in plans:
        codes = [p.code for p in plan.players]
        assert len(set(codes)) == len(codes) and 2 <= len(codes) <= 4
        assert split_of(plan.work) == "test"
        for p in plan.players:
            inst = BY_CODE[p.code]
            assert p.shift % 12 == 0 and abs(p.shift) <= 24
            notes = [n for n in works[plan.work].parts[p.part].notes
                     if plan.start <= n.onset < plan.end]
            keep = 2 if inst.family == "strings" else 1
            pitches = [q + p.shift for n in notes for q in n.pitches[:keep]]
            assert inst.low <= min(pitches) and max(pitches) <= inst.high
            cover[p.code] += 1
    counts = sorted(cover.values())
    assert counts[0] >= 1 and counts[-1] <= 3 * counts[0]


def test_repeated_instruments_share_a_piece_only_when_needed(cache):
    # 3 string instruments for 4-5 players: pieces repeat an instrument (a quartet's two
    # violins) but mix instruments, never one instrument alone
    config = replace(SMALL, max_pieces=0, minutes_per_instrument=1.0, excerpt_seconds=10.0,
                     instruments=("vn", "va", "vc"), distinct=False, min_players=4,
                     max_players=5)
    plans, _ = plan_pieces(config, cache)
    assert len(plans) >= 3
    for plan in plans:
        codes = [p.code for p in plan.players]
        assert len(set(codes)) >= 2 and len(codes) in (4, 5), codes
    assert sum(len(set(p.code for p in plan.players)) == 3 for plan in plans) >= 1


def test_splits_disjoint_by_work():
    paths = list_works()
    by_key: dict[str, set[str]] = {}
    for p in paths:
        by_key.setdefault(work_key(p), set()).add(split_of(p))
    assert all(len(s) == 1 for s in by_key.values())
    assert work_key("haydn/opus74no1/movement3.mxl") == "haydn/opus74no1"
    shares = {s: sum(split_of(p) == s for p in paths) / len(paths)
              for s in ("train", "valid", "test")}
    assert 0.7 < shares["train"] < 0.9 and 0.05 < shares["valid"] < 0.15
    assert 0.05 < shares["test"] < 0.15


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fonts": ("nosuchfont",)}, "unknown SoundFont 'nosuchfont'"),
        ({"fonts": ("/nonexistent/x.sf2",)}, "does not exist"),
        ({"instruments": ("vn", "kazoo")}, "unknown instrument 'kazoo'"),
        ({"instruments": ("vn", "va"), "min_players": 3, "max_players": 3}, "distinct"),
        ({"max_players": 8}, "<= 7"),
        ({"split": "dev"}, "unknown split"),
        ({"timbre_shift": 13}, "--timbre-shift"),
        ({"timbre_shift": -1}, "--timbre-shift"),
    ],
)
def test_bad_options_raise_one_line(tmp_path, change, message):
    with pytest.raises(CusepError, match=re.escape(message)) as err:
        render_dataset(tmp_path / "out", replace(SMALL, **change), progress=False)
    assert "\n" not in str(err.value)


def test_unwritable_or_busy_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CusepError, match="cannot write|is a file"):
        render_dataset(blocker / "sub", SMALL, progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(CusepError, match="--resume.*--force"):
        render_dataset(busy, SMALL, progress=False)


def test_missing_tools_name_the_install_command(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(CusepError) as err:
        check_requirements(["timgm6mb"])
    assert INSTALL_COMMAND in str(err.value)
    assert INSTALL_COMMAND == "apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont"
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(CusepError, match=re.escape("pip install -e '.[synth]'")):
        check_requirements(["timgm6mb"])


def test_cli_renders_and_rejects(tmp_path, cache, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from cusep.cli import synth as synth_cli

    app = typer.Typer()
    synth_cli.register(app)

    @app.command("other")
    def _other() -> None:  # a second command keeps "synth" a sub-command
        pass

    monkeypatch.setenv("CUSEP_CACHE", str(cache.parent))
    runner = CliRunner()
    ok = runner.invoke(app, ["synth", str(tmp_path / "cli"), "--split", "test", "--fonts",
                             "timgm6mb", "--sources", "bach", "--max-pieces", "1",
                             "--excerpt-seconds", "4"])
    assert ok.exit_code == 0, ok.output
    assert len([p for p in (tmp_path / "cli").iterdir() if p.is_dir()]) == 1
    bad = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--instruments", "vn,kazoo"])
    assert bad.exit_code != 0 and isinstance(bad.exception, CusepError)


def _frames(x: np.ndarray, n: int = 2048, hop: int = 256) -> np.ndarray:
    """Magnitude spectra of Hann-windowed frames: (frames, n // 2 + 1)."""
    w = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)
    return np.abs(np.fft.rfft(w, axis=1))


@pytest.mark.skipif(not Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file(),
                    reason="FluidR3 is needed: apt-get install fluid-soundfont-gm")
def test_timbre_shift_keeps_notes_and_timing(tmp_path, cache):
    """--timbre-shift changes the players' timbre, not their pitches, onsets or length."""
    one = replace(SMALL, fonts=("fluidr3",), max_pieces=1, min_players=3, max_players=3,
                  reverb=0.0, seed=4)  # FluidR3: several key zones (samples) per instrument
    plain = render_dataset(tmp_path / "plain", one, progress=False, cache_dir=cache)
    moved = render_dataset(tmp_path / "moved", replace(one, timbre_shift=3), progress=False,
                           cache_dir=cache)
    piece, ref = moved["pieces"][0], plain["pieces"][0]
    assert piece["name"] == ref["name"] and piece["duration_s"] == ref["duration_s"]
    shifts = [p["timbre_shift"] for p in piece["players"]]
    assert all(-3 <= s <= 3 for s in shifts) and any(shifts), shifts
    assert all(p["timbre_shift"] == 0 for p in ref["players"])
    number, title = piece["name"].split("_")[:2]
    moved_spectra = []
    for k, (player, s) in enumerate(zip(piece["players"], shifts, strict=True), start=1):
        name = f"AuSep_{k}_{player['code']}_{number}_{title}.wav"
        x, _ = sf.read(tmp_path / "moved" / piece["name"] / name)
        y, _ = sf.read(tmp_path / "plain" / piece["name"] / name)
        assert x.shape == y.shape
        if s == 0:  # the same stem; only the piece's peak normalisation differs
            np.testing.assert_allclose(x, x @ y / (y @ y) * y, atol=3 / 32767)
            continue
        fx, fy = _frames(x), _frames(y)
        flux_x = np.maximum(np.diff(np.log1p(fx.sum(1))), 0)
        flux_y = np.maximum(np.diff(np.log1p(fy.sum(1))), 0)
        lags = range(-4, 5)
        corr = [np.corrcoef(np.roll(flux_x, lag), flux_y)[0, 1] for lag in lags]
        assert abs(lags[int(np.argmax(corr))]) <= 1 and max(corr) > 0.6, corr
        loud = (fx.max(1) > 0.05 * fx.max()) & (fy.max(1) > 0.05 * fy.max())
        semis = 12 * np.log2((fx[loud].argmax(1) + 1) / (fy[loud].argmax(1) + 1))
        assert abs(np.median(semis)) < 0.5  # the strongest partial sits at the same pitch
        lx, ly = np.log(fx.mean(0) + 1e-6), np.log(fy.mean(0) + 1e-6)
        moved_spectra.append(np.mean(np.abs(lx - ly)))
    assert max(moved_spectra) > 0.1, moved_spectra  # ... but other samples: other spectra
