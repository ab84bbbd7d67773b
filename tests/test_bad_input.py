"""Every bad or odd input of the fresh-install report, through the CLI, with one set of checks.

A refused command must: exit non-zero, print exactly one ``error:`` line naming the problem
(and no traceback), and leave the disk as it found it - no stem, no ``.part``/``.tmp``/lock
file, no empty folder, nothing outside ``-o``, no input changed or lost. The disk check is a
snapshot of every file (path, size, content hash) and folder under the test's folder, taken
after the case is set up and compared after the command.

Cases that are not refusals (a killed run's leftovers, a truncated wav, clipping) have their own
tests below with the same disk checks.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tiny import SETS
from videos import boxes_json, write_video

from cusep.cli import main
from cusep.separate import Separator


def run_cli(capsys: pytest.CaptureFixture[str], args: list[object]) -> tuple[int, str]:
    """``cusep *args`` in-process -> (exit code, stdout + stderr)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    out = capsys.readouterr()
    return code, out.out + out.err


def snapshot(root: Path) -> dict[str, str]:
    """Every file (-> size and sha256) and folder (-> 'dir') under ``root``."""
    state = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_dir():
            state[rel] = "dir"
        else:
            state[rel] = f"{p.stat().st_size}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
    return state


def assert_refused(code: int, text: str, needle: str) -> None:
    assert code != 0, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines()
              if line.lower().startswith(("error", "interrupted"))]
    assert len(errors) == 1, text
    assert needle in errors[0], errors[0]


@dataclass
class Ctx:
    """What a case builds its command from: the test folder, a short mono input, a model, an
    output folder (not yet made) and a trained run (copied into the test folder on demand)."""

    root: Path
    track: Path
    model: Path
    out: Path
    run_src: Path
    monkeypatch: pytest.MonkeyPatch

    def wav(self, name: str, audio: np.ndarray, rate: int, **kw) -> Path:
        path = self.root / name
        sf.write(path, np.asarray(audio).T, rate, **kw)
        return path

    def model_with(self, **config) -> Path:
        """A copy of the model whose config.json has ``config`` set in its spectral section
        (or at the top level for ``channels``)."""
        copy = self.root / "bad_model"
        shutil.copytree(self.model, copy)
        cfg = json.loads((copy / "config.json").read_text())
        for key, value in config.items():
            (cfg if key == "channels" else cfg["spectral"])[key] = value
        (copy / "config.json").write_text(json.dumps(cfg))
        return copy

    def video(self) -> Path:
        """A 1 s video of one player, with sound."""
        frames = [np.full((96, 80, 3), 40 + k, np.uint8) for k in range(25)]
        audio = np.sin(np.arange(11025) * 0.2)[None].astype(np.float32) * 0.2
        return write_video(self.root / "in" / "v.mp4", frames, audio=audio)

    def boxes(self, text: str | None = None) -> Path:
        path = self.root / "boxes.json"
        path.write_text(text if text is not None else json.dumps(boxes_json(1, ["vn"])))
        return path

    def run(self) -> Path:
        copy = self.root / "run"
        if not copy.exists():
            shutil.copytree(self.run_src, copy)
        return copy


def sep(ctx: Ctx, *args: object, model: Path | None = None) -> list[object]:
    return ["separate", ctx.track, "-i", "vn,vc", "-m", model or ctx.model, "-o", ctx.out,
            "-d", "cpu", *args]


def _disk_full(ctx: Ctx) -> list[object]:
    def full(self, data):
        raise sf.LibsndfileError(0, "Error writing: No space left on device")

    ctx.monkeypatch.setattr(sf.SoundFile, "write", full)
    return sep(ctx)


def _ctrl_c(ctx: Ctx) -> list[object]:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    ctx.monkeypatch.setattr(Separator, "_process", interrupted)
    return sep(ctx)


def _nested_boxes(ctx: Ctx) -> list[object]:
    boxes = ctx.boxes("[" * 100_000 + "]" * 100_000)
    return ["separate", ctx.video(), "--boxes", boxes, "-m", ctx.model, "-o", ctx.out]


def _locked(ctx: Ctx) -> list[object]:
    """Another live cusep process holds the lock of one stem."""
    folder = ctx.out / "a"
    folder.mkdir(parents=True)
    (folder / ".vc.wav.cusep-lock").write_text(str(ctx.monkeypatch.live_pid))  # type: ignore
    return sep(ctx)


def _corrupt_weights(ctx: Ctx) -> list[object]:
    copy = ctx.root / "flipped"
    shutil.copytree(ctx.model, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF  # in the tensor data: it would load and give wrong stems
    (copy / "model.safetensors").write_bytes(bytes(data))
    return sep(ctx, model=copy)


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _resume(ctx: Ctx, *extra: object) -> list[object]:
    return ["train", ctx.run(), "--resume", "--max-steps", "3", "--no-progress", "-d", "cpu",
            *extra]


def _new_run(ctx: Ctx, *extra: object) -> list[object]:
    return ["train", ctx.root / "new_run", "--data", ctx.run_src.parent / "data",
            "--no-progress", "-d", "cpu", *SETS, *extra]


def _truncated_checkpoint(ctx: Ctx) -> list[object]:
    _truncate(ctx.run() / "checkpoint.pt", 5000)
    return _resume(ctx)


def _truncated_run_config(ctx: Ctx) -> list[object]:
    _truncate(ctx.run() / "config.json", 200)
    return _resume(ctx)


def _export_truncated_checkpoint(ctx: Ctx) -> list[object]:
    _truncate(ctx.run() / "checkpoint.pt", 5000)
    return ["export", ctx.run(), ctx.out, "--weights", "last"]


def _export_truncated_best(ctx: Ctx) -> list[object]:
    _truncate(ctx.run() / "best.safetensors", 3000)
    return ["export", ctx.run(), ctx.out]


Case = tuple[str, Callable[[Ctx], list[object]], str]
CASES: list[Case] = [
    # separate: the input, the model, the options
    ("disk-full", _disk_full, "free some disk space"),
    ("ctrl-c", _ctrl_c, "interrupted"),
    ("rate-1-hz", lambda c: ["separate", c.wav("slow.wav", np.zeros((1, 100)), 1), "-i", "vn",
                             "-m", c.model, "-o", c.out], "outside 1000..768000 Hz"),
    ("config-n-fft-0", lambda c: sep(c, model=c.model_with(n_fft=0)), "n_fft"),
    ("config-channels-abc", lambda c: sep(c, model=c.model_with(channels="abc")), "channels"),
    ("corrupt-weights", _corrupt_weights, "sha256"),
    ("filename-too-long", lambda c: sep(c, "--filename", "{track}/" + "x" * 250 + "{stem}.{ext}"),
     "at most 240"),
    ("filename-escapes", lambda c: sep(c, "--filename", "../../x_{stem}.{ext}"),
     "outside the output folder"),
    ("filename-absolute", lambda c: sep(c, "--filename", str(c.root / "abs_{stem}.{ext}")),
     "outside the output folder"),
    ("input-named-dot-dot", lambda c: ["separate", c.wav("...wav", np.zeros((1, 11025)), 11025,
                                                        format="WAV"),
                                       "-i", "vn", "-m", c.model, "-o", c.out],
     "outside the output folder"),
    ("filename-wrong-extension", lambda c: sep(c, "-f", "flac", "--filename",
                                               "{track}/{stem}.wav"), "end the template"),
    ("filename-empty", lambda c: sep(c, "--filename", ""), "--filename is empty"),
    ("niter-unbounded", lambda c: sep(c, "--niter", "100000"), "--wiener-iterations must be"),
    ("start-negative", lambda c: sep(c, "--start", "-1"), "--start must be"),
    ("start-past-end", lambda c: sep(c, "--start", "60"), "past its end"),
    ("locked-by-another-process", _locked, "another cusep process"),
    ("nested-boxes", _nested_boxes, "boxes.json"),
    ("overlay-not-a-video", lambda c: ["separate", c.video(), "--boxes", c.boxes(),
                                       "--overlay", c.root / "out.wav", "-m", c.model,
                                       "-o", c.out], "not a video file name"),
    # train: settings of the wrong type or range, and runs that cannot resume
    ("set-lr-abc", lambda c: _new_run(c, "--set", "optim.lr=abc"), "must be a number"),
    ("set-lr-negative", lambda c: _new_run(c, "--set", "optim.lr=-1"), "lr must be positive"),
    ("set-batch-size-0", lambda c: _new_run(c, "--set", "optim.batch_size=0"), "at least 1"),
    ("set-valid-items-0", lambda c: _new_run(c, "--set", "optim.valid_items=0"), "at least 1"),
    ("set-max-steps-abc", lambda c: _new_run(c, "--set", "optim.max_steps=abc"),
     "whole number"),
    ("set-seed-float", lambda c: _new_run(c, "--set", "optim.seed=1.5"), "whole number"),
    ("set-instruments-string", lambda c: _new_run(c, "--set", "model.instruments=vn"),
     "must be a list"),
    ("max-steps-negative", lambda c: _new_run(c, "--max-steps", "-5"), "at least 1"),
    ("layout-bogus", lambda c: _new_run(c, "--layout", "bogus"), "bogus"),
    ("resume-changed-model", lambda c: _resume(c, "--set", "model.channels=[4, 8, 32]"),
     "does not fit this run's model"),
    ("resume-truncated-checkpoint", _truncated_checkpoint, "truncated or corrupt"),
    ("resume-truncated-config", _truncated_run_config, "not valid JSON"),
    # export: truncated run files
    ("export-truncated-checkpoint", _export_truncated_checkpoint, "truncated or corrupt"),
    ("export-truncated-best", _export_truncated_best, "truncated or corrupt"),
]


@pytest.fixture(scope="module")
def trained_run(urmp_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step training run of a tiny model (its data folder beside it, as ``data``)."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(urmp_data, root / "data")
    done = subprocess.run(
        [sys.executable, "-m", "cusep", "train", str(root / "run"), "--data", str(root / "data"),
         "--max-steps", "4", "--no-progress", "--device", "cpu", *SETS],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run"


@pytest.fixture
def ctx(tmp_path: Path, short_model_dir: Path, make_signal, trained_run: Path,
        monkeypatch: pytest.MonkeyPatch) -> Ctx:
    root = tmp_path / "work"
    (root / "in").mkdir(parents=True)
    track = root / "in" / "a.wav"
    sf.write(track, make_signal(11025, 1.2, 1, seed=1).T, 11025)
    return Ctx(root, track, short_model_dir, root / "out", trained_run, monkeypatch)


@pytest.mark.parametrize(("make", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_with_one_line_and_the_disk_untouched(ctx, capsys, make, needle):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    ctx.monkeypatch.live_pid = live.pid  # type: ignore[attr-defined]  # for the lock case
    try:
        args = make(ctx)
        before = snapshot(ctx.root)
        code, text = run_cli(capsys, args)
    finally:
        live.kill()
        live.wait()
    assert_refused(code, text, needle)
    assert snapshot(ctx.root) == before


def test_a_killed_run_leaves_nothing_a_rerun_does_not_clean(ctx, capsys):
    folder = ctx.out / "a"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (folder / ".vn.wav.cusep-lock").write_text(dead)  # what kill -9 leaves
    (folder / ".vn.wav.0123abcd.part").write_bytes(b"\0" * 1000)
    code, text = run_cli(capsys, sep(ctx))
    assert code == 0, text
    assert sorted(p.name for p in folder.iterdir()) == ["vc.wav", "vn.wav"]


def test_a_truncated_wav_is_separated_with_a_warning(ctx, capsys, make_signal):
    src = ctx.wav("cut.wav", make_signal(11025, 5.0), 11025, subtype="PCM_16")
    _truncate(src, 44 + int(1.7 * 11025) * 2)  # the header says 5 s, 1.7 s remain
    code, text = run_cli(capsys, ["separate", src, "-i", "vn", "-m", ctx.model, "-o", ctx.out])
    assert code == 0, text
    assert "warning:" in text and "promises 5.0 s but the file holds 1.7 s" in text
    assert sf.info(ctx.out / "cut" / "vn.wav").frames == int(1.7 * 11025)


def test_a_failure_among_many_inputs_leaves_no_empty_folder(ctx, capsys):
    bad = ctx.root / "in" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    code, text = run_cli(capsys, ["separate", ctx.root / "in", "-i", "vn", "-m", ctx.model,
                                  "-o", ctx.out])
    assert code == 1 and "Traceback" not in text
    assert "broken.wav" in text
    assert snapshot(ctx.out) == {"a": "dir", "a/vn.wav": snapshot(ctx.out)["a/vn.wav"]}
