"""``cusep separate`` end to end: layout, templates, formats, skipping, batches and every user
error as one clear line (never a traceback, never a partial or clobbered file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import cusep.checkpoint
from cusep.checkpoint import sha256_file
from cusep.cli import app, main

Run = Callable[..., tuple[int, str, str]]
AUTO = "cuda" if torch.cuda.is_available() else "cpu"  # what --device auto picks here


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """``cli(*args)`` -> (exit code, stdout, stderr) of ``cusep separate *args``, in-process."""

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main(["separate", *map(str, args)])
        out = capsys.readouterr()
        code = info.value.code  # sys.exit(None) is success, sys.exit("text") failure
        return (0 if code is None else code if isinstance(code, int) else 1), out.out, out.err

    return run


def write_wav(path: Path, audio: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    """audio (channels, samples) -> a sound file (the subtype defaults to soundfile's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(audio).T, rate, subtype=subtype)
    return path


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error" in line.lower()]


def assert_one_clear_error(code: int, stdout: str, stderr: str, *needles: str) -> str:
    """Non-zero exit, one error line holding every needle, no traceback; returns the line."""
    assert code != 0
    assert "Traceback" not in stdout + stderr
    lines = error_lines(stdout + stderr)
    assert len(lines) == 1, stdout + stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data.T, rate


def rel_rms(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean((estimate - reference) ** 2) / np.mean(reference**2)))


@pytest.fixture
def track(tmp_path: Path, make_signal) -> Path:
    """in/a.wav: 1.2 s of mono tones at 11025 Hz, 16-bit."""
    return write_wav(tmp_path / "in" / "a.wav", make_signal(11025, 1.2, 1, seed=1), 11025)


# --------------------------------------------------------------------------- end to end (real)


def test_subprocess_folder_to_stems_keeps_format(tmp_path, tiny_model_dir, make_signal):
    stereo = make_signal(22050, 1.5, 2, seed=2)
    mono = make_signal(8000, 1.1, 1, seed=3)
    write_wav(tmp_path / "in" / "duo.wav", stereo, 22050, "FLOAT")
    write_wav(tmp_path / "in" / "sub" / "solo.flac", mono, 8000)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "cusep", "separate", str(tmp_path / "in"), "-i", "vn,cello",
         "--model", str(tiny_model_dir), "-o", str(out), "--format", "float32"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"on {AUTO}" in proc.stderr and "2 file(s)" in proc.stderr
    assert files_under(out) == [out / "duo" / "vc.wav", out / "duo" / "vn.wav",
                                out / "solo" / "vc.wav", out / "solo" / "vn.wav"]
    for name, source, rate in (("duo", stereo, 22050), ("solo", mono, 8000)):
        vn, vn_rate = read(out / name / "vn.wav")
        vc, vc_rate = read(out / name / "vc.wav")
        assert vn_rate == vc_rate == rate
        assert vn.shape == vc.shape == source.shape
        reference = read(tmp_path / "in" / ("duo.wav" if name == "duo" else "sub/solo.flac"))[0]
        assert rel_rms(vn + vc, reference) < 1e-3


def test_subprocess_user_error_is_one_line(tmp_path, track, tiny_model_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "cusep", "separate", str(track), "-i", "vn,violni",
         "--model", str(tiny_model_dir), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )
    line = assert_one_clear_error(proc.returncode, proc.stdout, proc.stderr,
                                  "unknown instrument 'violni'", "Did you mean 'vn'",
                                  "Valid codes: vn, va, vc, db, fl")
    assert proc.returncode == 1
    assert line.startswith("error:")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------- layout, template, formats


def test_default_layout(cli, tmp_path, track, short_model_dir):
    out = tmp_path / "out"
    code, _, err = cli(track, "-i", "vn,vc", "-m", short_model_dir, "-o", out)
    assert code == 0, err
    assert f"model {short_model_dir.name} on {AUTO}" in err
    assert files_under(out) == [out / "a" / "vc.wav", out / "a" / "vn.wav"]  # no temp files
    assert sf.info(out / "a" / "vn.wav").subtype == "PCM_16"


@pytest.mark.parametrize(("template", "expected"), [
    ("{stem}_{track}.{ext}", ["vc_a.wav", "vn_a.wav"]),
    ("{track}/stems/{stem}.{ext}", ["a/stems/vc.wav", "a/stems/vn.wav"]),
])
def test_filename_template(cli, tmp_path, track, short_model_dir, template, expected):
    out = tmp_path / "out"
    code, _, err = cli(track, "-i", "vn,vc", "-m", short_model_dir, "-o", out,
                       "--filename", template)
    assert code == 0, err
    assert files_under(out) == [out / e for e in expected]


@pytest.mark.parametrize(("template", "needle"), [
    ("{name}/{stem}.{ext}", "bad --filename template"),
    ("{track/{stem}.{ext}", "bad --filename template"),
    ("{}.{ext}", "bad --filename template"),
    ("{track}.{ext}", "include {stem}"),
])
def test_bad_filename_template(cli, tmp_path, track, short_model_dir, template, needle):
    out = tmp_path / "out"
    code, out_text, err = cli(track, "-i", "vn,vc", "-m", short_model_dir, "-o", out,
                              "--filename", template)
    assert_one_clear_error(code, out_text, err, needle)
    assert files_under(out) == []


@pytest.mark.parametrize(("fmt", "container", "subtype", "ext"), [
    ("wav16", "WAV", "PCM_16", "wav"),
    ("wav24", "WAV", "PCM_24", "wav"),
    ("float32", "WAV", "FLOAT", "wav"),
    ("flac", "FLAC", "PCM_16", "flac"),
    ("flac24", "FLAC", "PCM_24", "flac"),
    ("mp3", "MP3", "MPEG_LAYER_III", "mp3"),
])
def test_formats(cli, tmp_path, short_model_dir, make_signal, fmt, container, subtype, ext):
    source = make_signal(44100, 0.5, 2, seed=4)
    src = write_wav(tmp_path / "in" / "x.wav", source, 44100, "FLOAT")
    out = tmp_path / "out"
    code, _, err = cli(src, "-i", "va", "-m", short_model_dir, "-o", out, "--format", fmt)
    assert code == 0, err
    info = sf.info(out / "x" / f"va.{ext}")
    assert (info.format, info.subtype) == (container, subtype)
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, source.shape[1])
    # one instrument takes the whole mix: the stem is the input, up to the format's precision
    stem = read(out / "x" / f"va.{ext}")[0]
    if fmt == "mp3":  # lossy: the same signal, not the same samples
        assert rel_rms(stem, source) < 0.1
    else:
        tolerance = {"PCM_16": 1e-4, "PCM_24": 1e-5, "FLOAT": 1e-5}[subtype]
        assert np.abs(stem - source).max() < tolerance


def test_mp3_bitrate(cli, tmp_path, short_model_dir, make_signal):
    src = write_wav(tmp_path / "x.wav", make_signal(44100, 2.0, 2, seed=4), 44100)
    out = tmp_path / "out"
    code, _, err = cli(src, "-i", "va", "-m", short_model_dir, "-o", out, "-f", "mp3",
                       "--bitrate", "128")
    assert code == 0, err
    assert abs((out / "x" / "va.mp3").stat().st_size * 8 / 2.0 / 1000 - 128) < 13
    for args, needle in ((("-f", "mp3", "--bitrate", "100"), "not an mp3 bitrate"),
                         (("--bitrate", "128"), "--bitrate is for --format mp3")):
        code, stdout, err = cli(src, "-i", "va", "-m", short_model_dir, "-o", tmp_path / "o2",
                                *args)
        assert_one_clear_error(code, stdout, err, needle)


def test_options_are_accepted(cli, tmp_path, track, short_model_dir):
    out = tmp_path / "out"
    code, _, err = cli(track, "-i", "fl,ob", "-m", short_model_dir, "-o", out, "--raw",
                       "--niter", "1", "--batch-size", "1", "--overlap", "0.5",
                       "--precision", "fp32", "--clip-mode", "clamp", "-d", "auto")
    assert code == 0, err
    assert "(fp32)" in err
    assert len(files_under(out)) == 2


# ----------------------------------------------------------------------------- skip and force


def test_start_and_duration_separate_exactly_that_span(cli, tmp_path, short_model_dir,
                                                      make_signal):
    x = make_signal(22050, 4.0, 2, seed=6)
    src = write_wav(tmp_path / "long.wav", x, 22050, "FLOAT")
    out = tmp_path / "out"
    code, _, err = cli(src, "-i", "vn,vc", "-m", short_model_dir, "-o", out, "-f", "float32",
                       "--start", "1.5", "--duration", "2")
    assert code == 0, err
    vn, rate = read(out / "long" / "vn.wav")
    vc, _ = read(out / "long" / "vc.wav")
    assert rate == 22050 and vn.shape == (2, 2 * 22050)
    span = x[:, round(1.5 * 22050):round(3.5 * 22050)]
    assert rel_rms(vn + vc, span) < 1e-4  # the stems sum to exactly that span
    code, _, err = cli(src, "-i", "vn", "-m", short_model_dir, "-o", out, "--force",
                       "--start", "3", "--duration", "60")  # to the end
    assert code == 0, err
    assert read(out / "long" / "vn.wav")[0].shape == (2, x.shape[1] - 3 * 22050)


@pytest.mark.parametrize(("args", "needle"), [
    (("--start", "-1"), "--start must be 0 or more"),
    (("--duration", "0"), "--duration must be more than 0"),
    (("--start", "nan"), "--start must be 0 or more"),
    (("--start", "9"), "past its end (1.20 s)"),
])
def test_bad_start_or_duration(cli, tmp_path, track, short_model_dir, args, needle):
    out = tmp_path / "out"
    code, stdout, err = cli(track, "-i", "vn", "-m", short_model_dir, "-o", out, *args)
    assert_one_clear_error(code, stdout, err, needle)
    assert files_under(out) == [] and not out.exists()


def test_existing_output_is_skipped_untouched_unless_force(cli, tmp_path, track, short_model_dir):
    out = tmp_path / "out"
    assert cli(track, "-i", "vn,vc", "-m", short_model_dir, "-o", out)[0] == 0
    stem = out / "a" / "vn.wav"
    stem.write_bytes(b"my own file")
    other = (out / "a" / "vc.wav").read_bytes()

    code, _, err = cli(track, "-i", "vn,vc", "-m", short_model_dir, "-o", out)
    assert code == 0
    line = " ".join(err.split())
    assert f"skip {track}: 2 of 2 stems exist (a/vn.wav, a/vc.wav); use --force" in line
    assert stem.read_bytes() == b"my own file"
    assert (out / "a" / "vc.wav").read_bytes() == other

    code, _, err = cli(track, "-i", "vn,vc", "-m", short_model_dir, "-o", out, "--force")
    assert code == 0, err
    assert sf.info(stem).frames == sf.info(track).frames
    assert files_under(out) == [out / "a" / "vc.wav", stem]


def test_some_stems_present_names_them_and_the_missing_ones(cli, tmp_path, track,
                                                            short_model_dir):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "vc.wav").write_bytes(b"mine")
    code, _, err = cli(track, "-i", "vn,vc,fl", "-m", short_model_dir, "-o", out)
    assert code == 0, err  # skipped, as the README says, and the run succeeds
    line = " ".join(err.split())
    assert "1 of 3 stems exist (a/vc.wav); a/vn.wav, a/fl.wav not written either" in line
    assert "--force" in line and "total: 1 file (0 ok, 1 skipped, 0 failed)" in line
    assert files_under(out) == [out / "a" / "vc.wav"]


# ------------------------------------------------------------------------- many inputs at once


def test_many_inputs_one_failing(cli, tmp_path, short_model_dir, make_signal, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = Path("in")
    write_wav(folder / "a.wav", make_signal(11025, 1.0, 1, seed=5), 11025)
    write_wav(folder / "deep" / "b.flac", make_signal(16000, 1.0, 2, seed=6), 16000)
    (folder / "deep" / "broken.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "notes.txt").write_text("not audio")
    (folder / "._a.wav").write_bytes(b"\0" * 4096)  # macOS metadata: hidden, skipped
    single = write_wav(Path("c.wav"), make_signal(8000, 1.0, 1, seed=7), 8000)
    out = Path("out")

    code, stdout, err = cli(folder, single, "-i", "vn", "-m", short_model_dir, "-o", out)
    assert code == 1
    assert "4 file(s)" in err
    assert_one_clear_error(code, stdout, err, "broken.wav", "cannot be decoded")
    assert files_under(out) == [out / "a" / "vn.wav", out / "b" / "vn.wav", out / "c" / "vn.wav"]
    table = err[err.index("cusep separate"):]
    for name, status in (("a.wav", "ok"), ("b.flac", "ok"), ("broken.wav", "failed"),
                         ("c.wav", "ok")):
        assert any(name in row and status in row for row in table.splitlines()), table


def test_same_name_inputs_collide(cli, tmp_path, short_model_dir, make_signal):
    x = make_signal(11025, 1.0, 1)
    first = write_wav(tmp_path / "one" / "take.wav", x, 11025)
    second = write_wav(tmp_path / "two" / "take.flac", x, 11025)
    out = tmp_path / "out"
    code, stdout, err = cli(first, second, "-i", "vn", "-m", short_model_dir, "-o", out)
    assert_one_clear_error(code, stdout, err, str(first), str(second), "{track}")
    assert not out.exists()


def test_a_file_given_twice_runs_once(cli, tmp_path, track, short_model_dir):
    out = tmp_path / "out"
    code, _, err = cli(track, track.resolve(), track.parent, "-i", "vn", "-m", short_model_dir,
                       "-o", out)
    assert code == 0, err
    assert "1 file(s)" in err
    assert files_under(out) == [out / "a" / "vn.wav"]


def test_output_folder_inside_input_folder_is_not_rescanned(cli, tmp_path, track,
                                                            short_model_dir):
    folder = track.parent
    out = folder / "separated"
    assert cli(folder, "-i", "vn,vc", "-m", short_model_dir, "-o", out)[0] == 0
    code, _, err = cli(folder, "-i", "vn,vc", "-m", short_model_dir, "-o", out, "--force")
    assert code == 0, err
    assert "1 file(s)" in err
    assert files_under(out) == [out / "a" / "vc.wav", out / "a" / "vn.wav"]


def test_silence_gives_silent_stems(cli, tmp_path, short_model_dir):
    src = write_wav(tmp_path / "quiet.wav", np.zeros((2, 20000), np.float32), 22050)
    out = tmp_path / "out"
    code, _, err = cli(src, "-i", "vn,vc", "-m", short_model_dir, "-o", out)
    assert code == 0, err
    for code_ in ("vn", "vc"):
        stem, rate = read(out / "quiet" / f"{code_}.wav")
        assert rate == 22050 and stem.shape == (2, 20000)
        assert not stem.any()


def test_markup_like_paths_are_printed_verbatim(cli, tmp_path, short_model_dir, make_signal):
    good = write_wav(tmp_path / "take[/i]" / "x.wav", make_signal(11025, 1.0), 11025)
    bad = tmp_path / "[bold]" / "y.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF" + bytes(100))
    out = tmp_path / "out"
    code, stdout, err = cli(good, bad, "-i", "vn", "-m", short_model_dir, "-o", out)
    line = assert_one_clear_error(code, stdout, err, f"{bad}:")
    assert line.count(str(bad)) == 1  # the path once, not repeated by every layer
    assert f"ok {good}" in " ".join(err.split())
    assert files_under(out) == [out / "x" / "vn.wav"]


def test_main_can_run_many_times(capsys):
    for _ in range(2):
        with pytest.raises(SystemExit) as info:
            main(["separate", "--help"])
        assert info.value.code == 0
    assert "--instruments" in capsys.readouterr().out
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert len(names) == len(set(names))


# -------------------------------------------------------------------------------- user errors


def _bad_inputs(tmp: Path, signal: np.ndarray) -> dict[str, Path]:
    bad = {
        "missing": tmp / "nope.wav",
        "empty_folder": tmp / "empty",
        "corrupt": tmp / "corrupt.wav",
        "zero_length": tmp / "zero.wav",
        "too_short": tmp / "short.wav",
        "nan": tmp / "nan.wav",
    }
    bad["empty_folder"].mkdir()
    (bad["empty_folder"] / "readme.txt").write_text("no audio here")
    bad["corrupt"].write_bytes(np.random.default_rng(1).bytes(5000))
    write_wav(bad["zero_length"], np.zeros((1, 0), np.float32), 11025)
    write_wav(bad["too_short"], signal[:, :500], 11025)
    with_nan = signal.copy()
    with_nan[0, 1000] = np.nan
    write_wav(bad["nan"], with_nan, 11025, "FLOAT")
    return bad


@pytest.mark.parametrize(("case", "needles"), [
    ("missing", ["nope.wav", "not found"]),
    ("empty_folder", ["holds no audio files"]),
    ("corrupt", ["corrupt.wav", "cannot be decoded"]),
    ("zero_length", ["zero.wav", "no audio samples"]),
    ("too_short", ["short.wav", "too short", "500 samples"]),
    ("nan", ["nan.wav", "NaN"]),
])
def test_bad_input_files(cli, tmp_path, short_model_dir, make_signal, case, needles):
    source = _bad_inputs(tmp_path, make_signal(11025, 1.0))[case]
    out = tmp_path / "out"
    code, stdout, err = cli(source, "-i", "vn", "-m", short_model_dir, "-o", out)
    line = assert_one_clear_error(code, stdout, err, *needles)
    assert line.count(str(source)) == 1
    assert files_under(out) == []


@pytest.mark.parametrize(("args", "needles"), [
    (["-i", "vn,cello2"], ["unknown instrument 'cello2'", "Did you mean 'vc'", "Valid codes"]),
    (["-i", "vn,violin"], ["listed twice"]),
    (["-i", "vn", "--format", "ogg"], ["unknown --format 'ogg'", "wav16", "flac24", "mp3"]),
    (["-i", "vn", "--device", "tpu"], ["unknown device 'tpu'", "'--device'"]),
    (["-i", "vn", "--device", "cuda:7"], ["cuda:7"]),
    (["-i", "vn", "--clip-mode", "wrap"], ["--clip-mode"]),
    (["-i", "vn", "--precision", "fp8"], ["--precision"]),
    (["-i", "vn", "--overlap", "1.5"], ["--overlap"]),
    (["-i", "vn", "--batch-size", "0"], ["--batch-size"]),
    (["-i", "vn", "--niter", "-1"], ["--wiener-iterations"]),
    (["-i", "vn", "--threads", "0"], ["--threads must be at least 1 (got 0)"]),
    (["-i", "vn", "--threads", "-3"], ["--threads must be at least 1 (got -3)"]),
])
def test_bad_options(cli, tmp_path, track, short_model_dir, args, needles):
    out = tmp_path / "out"
    code, stdout, err = cli(track, "-m", short_model_dir, "-o", out, *args)
    assert_one_clear_error(code, stdout, err, *needles)
    assert not out.exists()


def test_threads_sets_torch_threads(cli, tmp_path, track, short_model_dir):
    import torch

    before = torch.get_num_threads()
    try:
        code, _, err = cli(track, "-i", "vn,vc", "-m", short_model_dir, "-o", tmp_path / "out",
                           "--threads", "1")
        assert code == 0, err
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert sorted(p.name for p in (tmp_path / "out" / "a").iterdir()) == ["vc.wav", "vn.wav"]


def test_instrument_the_model_does_not_know(cli, tmp_path, track, make_model_dir):
    duo = make_model_dir("duo", instruments=("vn", "vc"), context_dim=2)
    code, stdout, err = cli(track, "-i", "vn,fl", "-m", duo, "-o", tmp_path / "out")
    assert_one_clear_error(code, stdout, err, "cannot separate fl (flute)", "it knows: vn, vc")


def test_unwritable_output_folder(cli, tmp_path, track, short_model_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    code, stdout, err = cli(track, "-i", "vn", "-m", short_model_dir, "-o", blocker / "x")
    assert_one_clear_error(code, stdout, err, "output folder", str(blocker / "x"))
    assert blocker.read_text() == "a file where a folder should be"


def test_unwritable_stem_folder_leaves_no_partial_set(cli, tmp_path, track, short_model_dir):
    """The second stem cannot be written: the first one, new in this run, is removed."""
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "vc").write_text("a file where the template wants a folder")
    code, stdout, err = cli(track, "-i", "vn,vc", "-m", short_model_dir, "-o", out,
                            "--filename", "{track}/{stem}/{stem}.{ext}")
    assert_one_clear_error(code, stdout, err, "a.wav")
    assert files_under(out) == [out / "a" / "vc"]


@pytest.mark.parametrize(("model", "needles"), [
    ("./no/such/model", ["no model directory"]),
    ("nosuchmodel", ["unknown model 'nosuchmodel'", "known: tiny"]),
])
def test_missing_model(cli, tmp_path, track, model, needles, monkeypatch, tiny_model_dir):
    registry = tmp_path / "models" / "registry.json"
    registry.parent.mkdir()
    registry.write_text(json.dumps({"tiny": {"path": str(tiny_model_dir)}}))
    monkeypatch.setattr(cusep.checkpoint, "default_registry", lambda: registry)
    code, stdout, err = cli(track, "-i", "vn", "-m", model, "-o", tmp_path / "out")
    assert_one_clear_error(code, stdout, err, *needles)


def test_no_model_and_no_registry(cli, tmp_path, track, monkeypatch):
    monkeypatch.setattr(cusep.checkpoint, "default_registry", lambda: None)
    code, stdout, err = cli(track, "-i", "vn", "-o", tmp_path / "out")
    assert_one_clear_error(code, stdout, err, "no default model")


def _registry_with(tmp_path: Path, model_dir: Path, monkeypatch) -> Path:
    """A copy of ``model_dir`` as the registry's verified default; returns the copy."""
    copy = tmp_path / "models" / "tiny"
    shutil.copytree(model_dir, copy)
    registry = tmp_path / "models" / "registry.json"
    sha = sha256_file(copy / "model.safetensors")
    registry.write_text(json.dumps({"default": "tiny", "tiny": {"path": "tiny", "sha256": sha}}))
    monkeypatch.setattr(cusep.checkpoint, "default_registry", lambda: registry)
    return copy


def test_registry_default_model(cli, tmp_path, track, short_model_dir, monkeypatch):
    _registry_with(tmp_path, short_model_dir, monkeypatch)
    out = tmp_path / "out"
    code, _, err = cli(track, "-i", "vn", "-o", out)
    assert code == 0, err
    assert f"model tiny on {AUTO}" in err
    assert files_under(out) == [out / "a" / "vn.wav"]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_weights_fail_the_checksum(cli, tmp_path, track, short_model_dir, monkeypatch):
    copy = _registry_with(tmp_path, short_model_dir, monkeypatch)
    _flip(copy / "model.safetensors", -100)  # in the tensor data: loads, but is wrong
    out = tmp_path / "out"
    code, stdout, err = cli(track, "-i", "vn", "-m", "tiny", "-o", out)
    assert_one_clear_error(code, stdout, err, "corrupt weights", "sha256", "expected")
    assert not out.exists()


def test_corrupt_weights_header(cli, tmp_path, track, short_model_dir):
    copy = tmp_path / "broken_model"
    shutil.copytree(short_model_dir, copy)
    _flip(copy / "model.safetensors", 12)  # inside the JSON header
    code, stdout, err = cli(track, "-i", "vn", "-m", copy, "-o", tmp_path / "out")
    assert_one_clear_error(code, stdout, err, "corrupt weights")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_output_folder(cli, tmp_path, track, short_model_dir):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, stdout, err = cli(track, "-i", "vn", "-m", short_model_dir, "-o", out)
        assert_one_clear_error(code, stdout, err)
        assert files_under(out) == []
    finally:
        out.chmod(0o755)


def test_rest_writes_two_stems_that_sum_to_the_input(cli, tmp_path, track, short_model_dir):
    out = tmp_path / "out"
    code, _, err = cli(track, "-i", "vn", "--rest", "-m", short_model_dir, "-o", out, "-f",
                       "float32")
    assert code == 0, err
    assert "vn + rest" in err
    assert files_under(out) == [out / "a" / "rest.wav", out / "a" / "vn.wav"]
    x, _ = sf.read(track, dtype="float32")
    vn, _ = sf.read(out / "a" / "vn.wav", dtype="float32")
    rest, _ = sf.read(out / "a" / "rest.wav", dtype="float32")
    assert np.abs(vn + rest - x).max() < 1e-3 * np.abs(x).max()
    assert np.abs(rest).max() > 1e-3 and np.abs(vn).max() > 1e-3


@pytest.mark.parametrize(("fmt", "rescaled"), [("wav16", True), ("float32", False)])
def test_rescale_is_one_factor_for_all_stems_and_only_when_needed(cli, tmp_path, short_model_dir,
                                                                   make_signal, fmt, rescaled):
    src = tmp_path / "loud.wav"
    x = make_signal(11025, 1.5) * 4.0 / np.abs(make_signal(11025, 1.5)).max()  # peaks at 4
    sf.write(src, x.T, 11025, subtype="FLOAT")
    out = tmp_path / "out"
    code, _, err = cli(src, "-i", "vn,vc", "-m", short_model_dir, "-o", out, "-f", fmt)
    assert code == 0, err
    vn, _ = sf.read(out / "loud" / "vn.wav", dtype="float32", always_2d=True)
    vc, _ = sf.read(out / "loud" / "vc.wav", dtype="float32", always_2d=True)
    total = (vn + vc).T
    factor = np.sum(total * x) / np.sum(x * x)  # the sum is the input times one factor
    assert np.abs(total - factor * x).max() < 2e-3 * np.abs(x).max()
    if rescaled:
        assert max(np.abs(vn).max(), np.abs(vc).max()) <= 1.0 and factor < 0.9
        assert "all divided by" in err
    else:
        assert abs(factor - 1.0) < 1e-3 and "divided" not in err


def test_many_channels_are_separated_and_written(cli, tmp_path, short_model_dir, make_signal):
    src = tmp_path / "multi.wav"
    x = make_signal(11025, 1.2, 65, seed=5)
    sf.write(src, x.T, 11025, subtype="FLOAT")
    out = tmp_path / "out"
    code, _, err = cli(src, "-i", "vn,vc", "-m", short_model_dir, "-o", out, "-f", "float32")
    assert code == 0, err
    vn, _ = sf.read(out / "multi" / "vn.wav", dtype="float32", always_2d=True)
    vc, _ = sf.read(out / "multi" / "vc.wav", dtype="float32", always_2d=True)
    assert vn.shape == x.T.shape
    assert np.abs(vn + vc - x.T).max() < 1e-3
