"""What ``cusep separate`` reports: the ``--json`` summary, the totals line, ``{parent}`` for
inputs of the same name, Hub models named by repo and revision, and ``cusep detect``'s order."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cusep.checkpoint import save_model_dir
from cusep.instruments import CODES
from cusep.model import DetectorConfig, InstrumentDetector
from cusep.spectral import SpectralConfig

REV = "0123456789abcdef0123456789abcdef01234567"


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.T, rate)
    return path


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_json_summary_on_stdout_messages_on_stderr(cli, tmp_path, short_model_dir, make_signal):
    write_wav(tmp_path / "in" / "a.wav", make_signal(11025, 1.2, seed=1), 11025)
    b = write_wav(tmp_path / "in" / "b.wav", make_signal(8000, 2.0, seed=2), 8000)
    broken = tmp_path / "in" / "broken.wav"
    broken.write_bytes(b"RIFF" + bytes(60))
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "b" / "vn.flac").write_bytes(b"mine")
    code, stdout, err = cli("separate", tmp_path / "in", "-i", "vn,vc", "-m", short_model_dir,
                            "-o", out, "--json", "-f", "flac", "--niter", "1")
    assert code == 1  # the broken input fails; the others still run
    data = json.loads(stdout)  # stdout holds the JSON and nothing else
    assert "ok " in err and "skip" in err and "error:" in err and "total:" in err
    assert data["device"] == "cpu" or data["device"].startswith("cuda")
    assert data["model"]["name"] == short_model_dir.name
    assert data["model"]["path"] == str(short_model_dir)
    assert data["settings"]["format"] == "flac" and data["settings"]["wiener_iterations"] == 1
    assert data["settings"]["instruments"] == "vn,vc" and data["settings"]["mix_floor"] == 0.1
    by_input = {Path(r["input"]).name: r for r in data["inputs"]}
    assert [by_input[n]["status"] for n in ("a.wav", "b.wav", "broken.wav")] == \
        ["ok", "skipped", "failed"]
    ok = by_input["a.wav"]
    assert ok["stems"] == {"vn": str(out / "a" / "vn.flac"), "vc": str(out / "a" / "vc.flac")}
    assert all(Path(p).is_file() for p in ok["stems"].values())
    assert ok["audio_seconds"] == pytest.approx(1.2, abs=1e-3) and ok["seconds"] > 0
    skipped = by_input["b.wav"]
    assert skipped["stems"] == {"vn": str(out / "b" / "vn.flac")}
    assert skipped["audio_seconds"] == 0
    assert "cannot be decoded" in by_input["broken.wav"]["detail"]
    totals = data["totals"]
    assert (totals["files"], totals["ok"], totals["skipped"], totals["failed"]) == (3, 1, 1, 1)
    assert totals["audio_seconds"] == pytest.approx(1.2, abs=1e-3)
    # wall_seconds is rounded to 1 ms, so the ratio of the rounded values may differ by that
    assert totals["real_time_factor"] == pytest.approx(
        totals["wall_seconds"] / totals["audio_seconds"],
        rel=1e-2, abs=1e-3 / totals["audio_seconds"])
    assert b.exists() and (out / "b" / "vn.flac").read_bytes() == b"mine"


def test_one_input_gets_a_totals_line_too(cli, tmp_path, short_model_dir, make_signal):
    src = write_wav(tmp_path / "x.wav", make_signal(11025, 1.5), 11025)
    code, stdout, err = cli("separate", src, "-i", "vn", "-m", short_model_dir,
                            "-o", tmp_path / "out")
    assert code == 0, err
    assert stdout == ""  # without --json nothing goes to stdout
    line = next(x for x in err.splitlines() if x.startswith("total:"))
    assert line.startswith("total: 1 file (1 ok, 0 skipped, 0 failed), 1.5 s of audio in ")
    assert "real-time factor" in line
    assert "cusep separate" not in err  # no table for one input


def test_same_names_in_two_folders_are_told_to_use_parent(cli, tmp_path, short_model_dir,
                                                          make_signal):
    x = make_signal(11025, 1.0)
    first = write_wav(tmp_path / "mon" / "take.wav", x, 11025)
    second = write_wav(tmp_path / "tue" / "take.flac", x, 11025)
    out = tmp_path / "out"
    code, _, err = cli("separate", first, second, "-i", "vn", "-m", short_model_dir, "-o", out)
    assert code == 1 and not out.exists()
    hint = " ".join(err.split())
    assert "--filename '{parent}/{track}/{stem}.{ext}'" in hint
    code, _, err = cli("separate", first, second, "-i", "vn", "-m", short_model_dir, "-o", out,
                       "--filename", "{parent}/{track}/{stem}.{ext}")
    assert code == 0, err
    assert files_under(out) == [out / "mon" / "take" / "vn.wav", out / "tue" / "take" / "vn.wav"]


# ------------------------------------------------------------------------------------- the Hub


def lay_out_hub_cache(cache: Path, repo_id: str, revision: str, model_dir: Path) -> None:
    """``model_dir`` stored as huggingface_hub stores it: blobs, a snapshot, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for file in sorted(model_dir.iterdir()):
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        (repo / "blobs" / blob).write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


@pytest.fixture
def hub(tmp_path, short_model_dir, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    lay_out_hub_cache(cache, "org/tiny", REV, short_model_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.mark.parametrize(("spec", "shown"), [
    ("org/tiny", "model org/tiny@main (commit 0123456789ab) on"),
    (f"org/tiny@{REV}", "model org/tiny@0123456789ab on"),
])
def test_hub_model_is_named_by_repo_and_revision(cli, tmp_path, hub, make_signal, spec, shown):
    src = write_wav(tmp_path / "x.wav", make_signal(11025, 1.0), 11025)
    code, stdout, err = cli("separate", src, "-i", "vn", "-m", spec, "-o", tmp_path / "out",
                            "--json")
    assert code == 0, err
    assert shown in err and REV not in err  # not the bare snapshot hash
    model = json.loads(stdout)["model"]
    assert model["source"] == ("org/tiny@main" if spec == "org/tiny" else spec)
    assert model["name"] == REV and model["label"] in shown


def test_hub_revision_missing_from_the_cached_repo_lists_the_cached_ones(cli, tmp_path, hub,
                                                                       make_signal):
    src = write_wav(tmp_path / "x.wav", make_signal(11025, 1.0), 11025)
    code, _, err = cli("separate", src, "-i", "vn", "-m", "org/tiny@v9", "-o", tmp_path / "out")
    assert code == 1 and "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    assert "the cached repo org/tiny has no revision 'v9'" in line
    assert "(cached: main=0123456789ab)" in line and "run once online" in line


# ------------------------------------------------------------------------------ cusep detect


def graded_detector(path: Path, logits: dict[str, float]) -> Path:
    """A tiny detector whose probabilities are sigmoid(logits[code]) whatever the input."""
    config = DetectorConfig(channels=(4, 8), hidden=16, threshold=0.5,
                            spectral=SpectralConfig(freq_scale="log", log_rows=32, segment=4095))
    model = InstrumentDetector(config).eval()
    with torch.no_grad():
        model.frame_head.weight.zero_()
        model.frame_head.bias.copy_(torch.tensor([logits.get(c, -6.0) for c in CODES]))
    return save_model_dir(path, model, config, dtype=torch.float32)


def test_detect_lists_detections_most_probable_first(cli, tmp_path, make_signal):
    det = graded_detector(tmp_path / "det", {"vn": 1.0, "fl": 3.0, "hn": 6.0})  # class order
    src = write_wav(tmp_path / "mix.wav", make_signal(22050, 2.0), 22050)
    code, stdout, err = cli("detect", src, "--model", det, "--device", "cpu")
    assert code == 0, err
    assert "hn 1.00, fl 0.95, vn 0.73 (threshold 0.50)" in stdout
    rows = [line for line in stdout.splitlines() if "(" in line and "│" in line]
    assert [r.split("(")[0].split()[-1] for r in rows][:3] == ["hn", "fl", "vn"]  # then ties
    code, stdout, err = cli("detect", src, "--model", det, "--device", "cpu", "--json")
    record = json.loads(stdout)["files"][0]
    assert record["detected"] == ["hn", "fl", "vn"]
    assert list(record["probabilities"])[:3] == ["hn", "fl", "vn"]
