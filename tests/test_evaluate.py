"""``cusep eval`` end to end on a small URMP-shaped folder (48 kHz harmonic tones, exact URMP
names): both protocols, merged players, reference rows, resume, compare and bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.stats import wilcoxon

from cusep.audio import resample
from cusep.cli import main
from cusep.evaluate import load_sources, select_pieces
from cusep.report import compare
from cusep.separate import Separator, SeparatorConfig

RATE = 48000
SEG = 65535
# piece -> (seconds, {player file stem: (f0, seconds of sound or None for all)})
PIECES = {
    "01_Jupiter_vn_vc": (13.0, {"1_vn": (440.0, None), "2_vc": (130.8, 5.0)}),
    "02_Sonata_vn_vn": (7.0, {"1_vn": (523.3, None), "2_vn": (392.0, None)}),
    "03_Dance_fl_cl_cl": (7.0, {"1_fl": (784.0, None), "2_cl": (293.7, None),
                                "3_cl": (220.0, None)}),
}
Run = Callable[..., tuple[int, str, str]]


def tone(f0: float, seconds: float, sounding: float | None, seed: int) -> np.ndarray:
    """Harmonic tone with a slow tremolo at 48 kHz; exact zeros after ``sounding`` seconds."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.28)) / h for h in range(1, 7)
            if h * f0 < 5000)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * (0.3 + 0.2 * rng.random()) * t) ** 2
    if sounding is not None:
        x[int(sounding * RATE):] = 0.0
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def make_urmp(root: Path) -> Path:
    for k, (folder, (seconds, players)) in enumerate(PIECES.items()):
        d = root / folder
        d.mkdir(parents=True)
        number, title = folder.split("_")[:2]
        mix = 0
        for j, (stem, (f0, sounding)) in enumerate(players.items()):
            x = tone(f0, seconds, sounding, 10 * k + j)
            sf.write(d / f"AuSep_{stem}_{number}_{title}.wav", x, RATE, subtype="FLOAT")
            mix = mix + x
        sf.write(d / f"AuMix_{folder}.wav", mix, RATE, subtype="FLOAT")
        (d / f"Vid_{folder}.mp4").write_bytes(b"not a video, never read")
    return root


@pytest.fixture(scope="module")
def urmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_urmp(tmp_path_factory.mktemp("urmp") / "URMP")


@pytest.fixture(scope="module")
def paper_run(urmp: Path, make_model_dir, tmp_path_factory) -> tuple[Path, str]:
    """The paper protocol on the fixture with the tiny model: (out folder, stderr)."""
    out = tmp_path_factory.mktemp("eval") / "paper"
    with pytest.MonkeyPatch.context() as mp:
        import io
        import sys

        err = io.StringIO()
        mp.setattr(sys, "stderr", err)
        mp.setattr(sys, "stdout", io.StringIO())
        with pytest.raises(SystemExit) as info:
            main(["eval", "urmp", str(urmp), "--model", str(make_model_dir("tiny")),
                  "--out", str(out), "--precision", "fp32", "--save-stems"])
    assert not info.value.code, err.getvalue()
    return out, err.getvalue()


def records(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["records"]


def pick(recs: list[dict], **match) -> list[dict]:
    return [r for r in recs if all(r[k] == v for k, v in match.items())]


def sources_11k(urmp: Path, folder: str) -> dict[str, np.ndarray]:
    """The fixture's sources summed per instrument, at 11025 Hz, straight from the files."""
    out: dict[str, np.ndarray] = {}
    for path in sorted((urmp / folder).glob("AuSep_*.wav")):
        code = path.name.split("_")[2]
        x, rate = sf.read(path, dtype="float32")
        out[code] = out.get(code, 0) + resample(x, rate, 11025)
    return out


# ------------------------------------------------------------------------------ data reader


def test_reader_merges_players_and_excludes_one_instrument_pieces(urmp):
    pieces, notes = select_pieces(urmp)
    assert [p.name for p in pieces] == ["01_Jupiter_vn_vc", "03_Dance_fl_cl_cl"]
    assert any("02_Sonata_vn_vn" in n for n in notes)
    sources, codes, rate = load_sources(pieces[1])
    assert codes == ("fl", "cl") and rate == RATE
    cl2, _ = sf.read(urmp / "03_Dance_fl_cl_cl" / "AuSep_2_cl_03_Dance.wav", dtype="float32")
    cl3, _ = sf.read(urmp / "03_Dance_fl_cl_cl" / "AuSep_3_cl_03_Dance.wav", dtype="float32")
    np.testing.assert_array_equal(sources[1], cl2 + cl3)
    assert np.abs(sources[1]).max() > np.abs(cl2).max()  # really two players


# ----------------------------------------------------------------------------- paper protocol


def test_paper_protocol_records(urmp, paper_run):
    out, err = paper_run
    recs = records(out)
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["protocol"] == "paper" and settings["tail_dropped"] is True
    assert "tail shorter than a segment is dropped" in settings["protocol_description"]
    assert settings["model"]["sha256"]
    assert settings["wiener_iterations"] == SeparatorConfig.wiener_iterations
    assert "v3" in settings["metric_variant"]["bss"] and "512" in settings["metric_variant"]["bss"]
    assert "02_Sonata_vn_vn" in err and not pick(recs, piece="02_Sonata_vn_vn")
    for method in ("tiny", "irm", "mix"):
        for piece, (seconds, _) in PIECES.items():
            if piece.startswith("02"):
                continue
            rows = pick(recs, method=method, piece=piece)
            n_seg = int(seconds * 11025) // SEG
            n_src = len({c.split("_")[1] for c in PIECES[piece][1]})
            assert len(rows) == n_seg * n_src
            assert {r["segment"] for r in rows} == set(range(n_seg))
            assert {r["start"] for r in rows} == {i * SEG for i in range(n_seg)}
            assert all(r["n_sources"] == n_src and r["length"] == SEG for r in rows)
    # cl: the two clarinet players are one source
    assert {r["instrument"] for r in pick(recs, piece="03_Dance_fl_cl_cl")} == {"fl", "cl"}
    # the cello is silent in segment 1: no SI-SDR, no BSS, a reason
    vc = pick(recs, method="tiny", piece="01_Jupiter_vn_vc", segment=1, instrument="vc")[0]
    assert vc["si_sdr"] is None and vc["sdr"] is None and "silent reference" in vc["note"]
    vn = pick(recs, method="tiny", piece="01_Jupiter_vn_vc", segment=1, instrument="vn")[0]
    assert vn["si_sdr"] is not None and vn["sdr"] is None and "BSS skipped" in vn["note"]
    assert (out / "results.csv").read_text().count("\n") == len(recs) + 1
    assert (out / "by_instrument.png").stat().st_size > 0
    assert (out / "by_n_sources.png").stat().st_size > 0


def test_reference_rows(urmp, paper_run):
    recs = records(paper_run[0])
    for r in pick(recs, method="irm"):
        mix = pick(recs, method="mix", piece=r["piece"], segment=r["segment"],
                   instrument=r["instrument"])[0]
        if r["si_sdr"] is not None and mix["si_sdr"] < 50:  # (not: the only sounding source)
            assert r["si_sdr"] > mix["si_sdr"] + 3
        if r["sdr"] is not None:
            assert r["sdr"] > mix["sdr"]
    # the mixture's SI-SDR is the formula on the fixture's own files
    for folder in ("01_Jupiter_vn_vc", "03_Dance_fl_cl_cl"):
        src = sources_11k(urmp, folder)
        mix = sum(src.values())
        for r in pick(recs, method="mix", piece=folder):
            if r["si_sdr"] is None:
                continue
            s = src[r["instrument"]][r["start"]:r["start"] + SEG].astype(np.float64)
            m = mix[r["start"]:r["start"] + SEG].astype(np.float64)
            alpha = (m @ s) / (s @ s + 1e-8)
            expected = 10 * np.log10((alpha * s) @ (alpha * s)
                                     / ((alpha * s - m) @ (alpha * s - m) + 1e-8) + 1e-8)
            assert r["si_sdr"] == pytest.approx(expected, abs=1e-3)
            assert r["si_sdri"] == 0.0


def test_paper_windows_align_with_segments(urmp, paper_run, make_model_dir):
    """Stem k-th segment == the model run on that segment alone (overlap 0, no context)."""
    out, _ = paper_run
    src = sources_11k(urmp, "01_Jupiter_vn_vc")
    mix = (src["vn"] + src["vc"])[: 2 * SEG]
    sep = Separator(make_model_dir("tiny"), device="cpu",
                    config=SeparatorConfig(overlap=0.0, precision="fp32"))
    stem, rate = sf.read(out / "stems" / "01_Jupiter_vn_vc" / "vc.wav", dtype="float32")
    assert rate == 11025 and len(stem) == 2 * SEG
    for k in range(2):
        alone = sep.separate(mix[k * SEG:(k + 1) * SEG], 11025, ["vn", "vc"])["vc"]
        np.testing.assert_allclose(stem[k * SEG:(k + 1) * SEG], alone, atol=2e-5)


# ------------------------------------------------------------------------------ full protocol


def test_full_protocol(urmp, make_model_dir, tmp_path, cli, paper_run):
    out = tmp_path / "full"
    code, stdout, err = cli("eval", "urmp", urmp, "--model", make_model_dir("tiny"),
                            "--protocol", "full", "--out", out,
                            "--precision", "fp32", "--no-plots")
    assert code == 0, err
    recs = records(out)
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["protocol"] == "full" and not settings["tail_dropped"]
    assert "v4" in settings["metric_variant"]["bss"]
    assert settings["window"] == {"seconds": 1.0, "hop_seconds": 1.0}
    for method in ("tiny", "irm", "mix"):
        rows = pick(recs, method=method)
        assert len(rows) == 4  # one per (piece, source), whole pieces
        for r in rows:
            seconds = PIECES[r["piece"]][0]
            assert r["length"] == int(seconds * RATE) and r["segment"] == 0
            assert r["isr"] is not None and r["frames"] >= 5
    for r in pick(recs, method="irm"):
        mix = pick(recs, method="mix", piece=r["piece"], instrument=r["instrument"])[0]
        assert r["si_sdr"] > mix["si_sdr"] and r["sdr"] > mix["sdr"]
    assert "SI-SDRi" in stdout and "full protocol" in stdout
    assert "2 piece(s) computed" in err
    one_error(*cli("eval", "compare", paper_run[0] / "results.json", out / "results.json"),
              "different protocols (full, paper)")


def test_full_protocol_without_bss_and_with_rest(urmp, make_model_dir, tmp_path, cli):
    full, quick, rest = tmp_path / "full", tmp_path / "quick", tmp_path / "rest"
    args = ["eval", "urmp", urmp, "--model", make_model_dir("tiny"), "--protocol", "full",
            "--precision", "fp32", "--no-plots", "--reference", "none"]
    for out, extra in ((full, []), (quick, ["--no-bss"]), (rest, ["--no-bss", "--rest"])):
        code, _, err = cli(*args, "--out", out, *extra)
        assert code == 0, err
    a, b, c = records(full), records(quick), records(rest)
    assert [r["si_sdr"] for r in a] == [r["si_sdr"] for r in b]  # the same separation
    assert all(r["sdr"] is None and r["frames"] is None for r in b)
    assert all(r["sdr"] is not None for r in a)
    assert len(c) == len(b) and [r["si_sdr"] for r in c] != [r["si_sdr"] for r in b]
    settings = json.loads((rest / "results.json").read_text())["settings"]
    assert settings["rest"] and "rest stem" in settings["conditioning"]


# ------------------------------------------------------------------------------------ resume


def test_resume_recomputes_only_missing_or_stale_pieces(paper_run, urmp, make_model_dir,
                                                         tmp_path, cli):
    out = tmp_path / "paper"
    shutil.copytree(paper_run[0], out)
    before = records(out)
    args = ("eval", "urmp", urmp, "--model", make_model_dir("tiny"), "--out", out,
            "--precision", "fp32", "--save-stems", "--no-plots")
    code, _, err = cli(*args)
    assert code == 0 and "0 piece(s) computed, 2 from cache" in err
    kept = out / "cache" / "03_Dance_fl_cl_cl.json"
    stamp = kept.stat().st_mtime_ns
    (out / "cache" / "01_Jupiter_vn_vc.json").unlink()
    code, _, err = cli(*args)
    assert code == 0 and "1 piece(s) computed, 1 from cache" in err, err
    assert kept.stat().st_mtime_ns == stamp
    assert records(out) == before  # same numbers, same order
    for cache in (out / "cache").glob("*.json"):  # two worker processes, same records
        cache.unlink()
    code, _, err = cli(*args, "--jobs", "2")
    assert code == 0 and "2 piece(s) computed, 0 from cache" in err
    assert records(out) == before
    code, _, err = cli(*args, "--wiener-iterations", "1", "--reference", "none")
    assert code == 0 and "2 piece(s) computed, 0 from cache" in err  # new settings: not reused


# ----------------------------------------------------------------------------------- compare


def test_compare_matches_scipy_wilcoxon(paper_run, urmp, make_model_dir, tmp_path, cli):
    base = paper_run[0] / "results.json"
    other_dir = tmp_path / "raw"
    code, _, err = cli("eval", "urmp", urmp, "--model", make_model_dir("tiny"), "--out",
                       other_dir, "--precision", "fp32", "--wiener-iterations", "0", "--raw",
                       "--reference", "none", "--no-plots", "--pes")
    assert code == 0, err
    other = other_dir / "results.json"
    assert {r["method"] for r in records(other_dir)} == {"tiny"}
    absent = pick(records(other_dir), piece="01_Jupiter_vn_vc", segment=0, present=False)
    assert sorted(r["instrument"] for r in absent) == sorted(
        ["va", "db", "fl", "ob", "cl", "bn", "sax", "tpt", "hn", "tbn", "tba"])
    assert all(r["pes"] is not None and r["si_sdr"] is None for r in absent)
    assert all(r["pes"] is None for r in pick(records(other_dir), present=True))
    rows = {c.metric: c for c in compare([base, other], ["si_sdr", "sdr"])}
    a = {(r["piece"], r["segment"], r["instrument"]): r for r in pick(records(paper_run[0]),
                                                                       method="tiny")}
    for metric, c in rows.items():
        pairs = [(a[k][metric], r[metric]) for r in records(other_dir)
                 if (k := (r["piece"], r["segment"], r["instrument"])) in a
                 and r[metric] is not None and a[k][metric] is not None]
        x, y = np.array(pairs).T
        assert c.n == len(pairs) and c.mean_diff == pytest.approx(np.mean(y - x))
        assert c.p_value == pytest.approx(wilcoxon(y - x).pvalue)
    code, stdout, err = cli("eval", "compare", base, base, "--metrics", "si_sdr")
    assert code == 0, err
    assert "+0.00 †" in stdout and "significant (two-sided Wilcoxon" in stdout


# --------------------------------------------------------------------------------- bad input


def one_error(code: int, stdout: str, stderr: str, *needles: str) -> str:
    assert code == 1
    assert "Traceback" not in stdout + stderr
    lines = [line for line in (stdout + stderr).splitlines() if "error" in line.lower()]
    assert len(lines) == 1, stdout + stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_not_urmp_shaped_folders(tmp_path, make_model_dir, cli):
    model = make_model_dir("tiny")
    one_error(*cli("eval", "urmp", tmp_path / "nowhere", "--model", model),
              "does not exist", "01_Jupiter_vn_vc")
    bad = tmp_path / "bad"
    (bad / "Jupiter").mkdir(parents=True)
    d = bad / "01_Jupiter_vn_vc"
    d.mkdir()
    sf.write(d / "AuSep_1_vn_01_Jupiter.wav", np.zeros(4800, np.float32), RATE)
    sf.write(d / "AuSep_2_va_01_Jupiter.wav", np.zeros(4800, np.float32), RATE)
    one_error(*cli("eval", "urmp", bad, "--model", model), "no piece found",
              "Folders skipped: 01_Jupiter_vn_vc: its AuSep files (1:vn, 2:va) disagree with "
              "its name", "; Jupiter: not a piece folder")
    one_error(*cli("eval", "urmp", bad, "--model", model, "--protocol", "fast"),
              "unknown --protocol 'fast'")
    one_error(*cli("eval", "compare", tmp_path / "x.json", tmp_path / "y.json"),
              "x.json: file not found")


def test_unreadable_audio_is_skipped_and_counted(urmp, make_model_dir, tmp_path, cli):
    data = tmp_path / "URMP"
    shutil.copytree(urmp, data)
    broken = data / "03_Dance_fl_cl_cl" / "AuSep_2_cl_03_Dance.wav"
    broken.write_bytes(b"RIFF garbage, not a wav file" * 10)
    out = tmp_path / "out"
    code, _, err = cli("eval", "urmp", data, "--model", make_model_dir("tiny"), "--out", out,
                       "--reference", "none", "--no-plots")
    assert code == 0 and "Traceback" not in err
    assert "skipped 03_Dance_fl_cl_cl:" in err and "AuSep_2_cl_03_Dance.wav" in err
    assert "1 piece(s) computed, 0 from cache, 1 skipped" in err
    saved = json.loads((out / "results.json").read_text())
    assert [s["piece"] for s in saved["pieces"]["skipped"]] == ["03_Dance_fl_cl_cl"]
    assert {r["piece"] for r in saved["records"]} == {"01_Jupiter_vn_vc"}


def test_model_lacking_an_instrument_skips_the_piece(urmp, make_model_dir, tmp_path, cli):
    model = make_model_dir("strings", instruments=("vn", "vc"), context_dim=2)
    out = tmp_path / "out"
    code, _, err = cli("eval", "urmp", urmp, "--model", model, "--out", out,
                       "--reference", "none", "--no-plots")
    assert code == 0, err
    assert "skipped 03_Dance_fl_cl_cl: model 'strings' cannot separate fl (flute), " \
           "cl (clarinet)" in err
    assert {r["piece"] for r in records(out)} == {"01_Jupiter_vn_vc"}
    only_winds = tmp_path / "winds"
    shutil.copytree(urmp / "03_Dance_fl_cl_cl", only_winds / "03_Dance_fl_cl_cl")
    one_error(*cli("eval", "urmp", only_winds, "--model", model, "--out", tmp_path / "o2"),
              "no piece could be evaluated (1 skipped)")


# ----------------------------------------------------------------------------- score-informed


def _scored_piece(root: Path) -> Path:
    """A duet whose violin plays the first 3 s and cello the last 3 s, with its Sco_*.mid."""
    from cusep.score import Score, ScoreNote, ScorePart, write_midi

    rate, folder = 11025, root / "0001_turns_vn_vc"
    folder.mkdir(parents=True)
    score = Score(folder / "Sco.mid", (
        ScorePart("violin", 40, "vn", tuple(ScoreNote(t, t + 0.45, 76 + (i % 3))
                                            for i, t in enumerate(np.arange(0, 3, 0.5)))),
        ScorePart("cello", 42, "vc", tuple(ScoreNote(t, t + 0.45, 48 + (i % 4))
                                           for i, t in enumerate(np.arange(3, 6, 0.5))))))
    t = np.arange(6 * rate) / rate
    for k, part in enumerate(score.parts, start=1):
        x = np.zeros_like(t)
        for n in part.notes:
            on = (t >= n.onset) & (t < n.offset)
            f0 = 440 * 2 ** ((n.pitch - 69) / 12)
            x[on] += sum(np.sin(2 * np.pi * h * f0 * t[on]) / h for h in range(1, 6)) * 0.1
        sf.write(folder / f"AuSep_{k}_{part.code}_0001_turns.wav", x, rate)
    write_midi(score, folder / "Sco_0001_turns_vn_vc.mid")
    return folder


def test_score_informed_masks_silence_an_instrument_where_it_rests(tmp_path, short_model_dir):
    from cusep.evaluate import EvalConfig, evaluate

    data = tmp_path / "data"
    _scored_piece(data)
    pieces, _ = select_pieces(data)

    def stems(score: str) -> np.ndarray:
        config = EvalConfig(protocol="full", references=(), bss=False, mix_floor=0.0,
                            score=score, save_stems=True)
        out = tmp_path / score
        result = evaluate(pieces, short_model_dir, out, config, data=data)
        assert not result.skipped
        return sf.read(out / "stems" / "0001_turns_vn_vc" / "vn.wav")[0]

    plain, gated = stems("none"), stems("exact")
    late = slice(int(3.6 * 11025), None)  # the cello alone, past the score's tolerance
    assert np.abs(plain[late]).max() > 1e-3  # the untrained model leaves cello in the violin
    assert np.abs(gated[late]).max() < 1e-6
    early = slice(0, int(2.8 * 11025))
    assert np.abs(gated[early]).max() > 1e-3


def test_score_modes_record_the_alignment(tmp_path, short_model_dir, cli):
    data = tmp_path / "data"
    _scored_piece(data)
    shutil.copytree(data / "0001_turns_vn_vc", data / "0002_nosco_vn_vc")
    for p in (data / "0002_nosco_vn_vc").glob("Sco_*"):
        p.unlink()
    code, _, err = cli("eval", "synth", data, "-m", short_model_dir, "--protocol", "full",
                       "--no-bss", "--no-plots", "--score", "aligned", "-o", tmp_path / "out")
    assert code == 0, err
    assert "no Sco_*.mid score" in err and "score alignment: median onset error" in err
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    model = [r for r in rows if r["method"] == short_model_dir.name]
    assert model and all(r["align_ms"] < 100 and 0 < r["align_confidence"] <= 1 for r in model)
    code, _, err = cli("eval", "synth", data, "-m", short_model_dir, "--score", "guess")
    assert code == 1 and "unknown --score 'guess'" in err


def test_score_parts_follow_the_players_whatever_their_programs(tmp_path, short_model_dir):
    from test_score import write_test_midi

    from cusep.evaluate import EvalConfig, evaluate

    folder = _scored_piece(tmp_path / "data")
    for p in folder.glob("Sco_*"):
        p.unlink()
    write_test_midi(folder / "Sco_0001_turns.mid", [  # URMP-like: tracks in player order
        ("Track 1", 0, [(2 * i, 0.9, 76) for i in range(6)]),
        ("Track 2", 0, [(6 + 2 * i, 0.9, 48) for i in range(6)]),
    ])
    pieces, _ = select_pieces(tmp_path / "data")
    config = EvalConfig(protocol="full", references=(), bss=False, score="exact")
    result = evaluate(pieces, short_model_dir, tmp_path / "out", config, data=tmp_path / "data")
    assert not result.skipped and result.records


def _write_notes(folder: Path) -> None:
    """URMP's annotations of the _scored_piece players: Notes_<k>_<code>_<piece>.txt, one
    'onset Hz duration' line per note, from its Sco_*.mid (which that piece plays exactly)."""
    from cusep.score import read_score

    score = read_score(next(folder.glob("Sco_*.mid")), "vn,vc")
    for k, part in enumerate(score.parts, start=1):
        lines = [f"{n.onset:.3f}\t{440 * 2 ** ((n.pitch - 69) / 12):.2f}\t"
                 f"{n.offset - n.onset:.3f}" for n in part.notes]
        (folder / f"Notes_{k}_{part.code}_0001_turns.txt").write_text("\n".join(lines) + "\n")


def test_urmp_notes_are_the_performance_and_sco_the_score_to_align(tmp_path, short_model_dir):
    from cusep.evaluate import EvalConfig, evaluate
    from cusep.score import read_score, write_midi

    data = tmp_path / "data"
    folder = _scored_piece(data)
    _write_notes(folder)
    sco = next(folder.glob("Sco_*.mid"))  # the printed score: 20 % slower than played
    write_midi(read_score(sco, "vn,vc").warped(lambda t: 1.2 * t), sco)
    pieces, _ = select_pieces(data)

    def run(score: str):
        config = EvalConfig(protocol="full", references=(), bss=False, mix_floor=0.0,
                            score=score, save_stems=True)
        result = evaluate(pieces, short_model_dir, tmp_path / score, config, data=data)
        assert not result.skipped
        vn = sf.read(tmp_path / score / "stems" / "0001_turns_vn_vc" / "vn.wav")[0]
        return vn, [r for r in result.records if r["method"] == short_model_dir.name]

    late = slice(int(3.6 * 11025), None)  # the cello alone as played
    exact, _ = run("exact")  # the Notes: the violin is silent where the cello plays alone
    assert np.abs(exact[late]).max() < 1e-6
    printed, _ = run("warped")  # the printed score unaligned: its violin runs into the cello
    assert np.abs(printed[int(3.6 * 11025):int(4.0 * 11025)]).max() > 1e-3
    aligned, rows = run("aligned")  # aligned to the mix and scored against the Notes
    assert rows and all(r["align_ms"] < 100 for r in rows)
    (folder / "Notes_2_vc_0001_turns.txt").unlink()
    config = EvalConfig(protocol="full", references=(), bss=False, score="exact")
    result = evaluate(pieces, short_model_dir, tmp_path / "bad", config, data=data)
    assert result.skipped and "none for player(s) 2 (vc)" in str(result.skipped)
