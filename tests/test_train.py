"""Training: presets, loss goes down, exact resume, DDP on CPU, export, bad data paths."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from references import all_rows_mse, every_row_targets
from tiny import SETS, TINY

from cusep.config import build_config, load_preset, preset_names
from cusep.errors import CusepError
from cusep.train import Trainer

RATE = 11025


def _config(data: Path, preset: str = "cusep-label", extra: tuple[str, ...] = ()):
    return build_config(preset, [*TINY, f"data.train=['{data}']", *extra])


AUDIO_PRESETS = [p for p in preset_names() if "visual" not in load_preset(p).get("model", {})]


@pytest.mark.parametrize("preset", AUDIO_PRESETS)  # visual presets: tests/test_visual.py
def test_every_preset_builds_and_steps(preset: str, urmp_data: Path, tmp_path: Path) -> None:
    extra = ["model.spectral.log_rows=64"]
    if "exp" in preset:  # the paper's presets sample unrelated solos: draw them from the stems
        extra.append("mixing.max_sources=3")
    cfg = _config(urmp_data, preset, tuple(extra))
    trainer = Trainer(cfg, tmp_path / "run", torch.device("cpu"), log=lambda s: None)
    loss = trainer.train_step()
    assert np.isfinite(loss) and trainer.step == 1


def test_training_lowers_the_loss(urmp_data: Path, tmp_path: Path) -> None:
    cfg = _config(urmp_data, extra=("optim.lr=1e-3", "optim.batch_size=8",
                                    "model.channels=[8, 16, 32, 64]",
                                    "model.spectral.segment=16383", "mixing.segment=16383"))
    trainer = Trainer(cfg, tmp_path / "run", torch.device("cpu"), log=lambda s: None)
    first = trainer.validate()["valid_loss"]
    for _ in range(25):
        trainer.train_step()
    assert trainer.validate()["valid_loss"] < first * 0.95


def test_kill_and_resume_reaches_the_same_state(urmp_data: Path, tmp_path: Path) -> None:
    cfg = _config(urmp_data, extra=("optim.max_steps=8",))
    straight = Trainer(cfg, tmp_path / "a", torch.device("cpu"), log=lambda s: None)
    straight.fit(progress=False)

    first = Trainer(_config(urmp_data, extra=("optim.max_steps=4",)), tmp_path / "b",
                    torch.device("cpu"), log=lambda s: None)
    first.fit(progress=False)
    del first  # "killed" after its step-4 checkpoint
    torch.manual_seed(1234)  # the resumed process starts with another global RNG state
    second = Trainer(cfg, tmp_path / "b", torch.device("cpu"), log=lambda s: None)
    assert second.resume() and second.step == 4
    second.fit(progress=False)

    a, b = straight.model.state_dict(), second.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    log_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert log_a[-1]["valid_loss"] == log_b[-1]["valid_loss"]


def test_cli_train_export_and_separate(urmp_data: Path, tmp_path: Path) -> None:
    run, model = tmp_path / "run", tmp_path / "model"
    sets = SETS
    cmd = [sys.executable, "-m", "cusep", "train", str(run), "--data", str(urmp_data),
           "--max-steps", "4", "--no-progress", "--device", "cpu", *sets]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "--resume" in again.stderr and "Traceback" not in again.stderr
    done = subprocess.run([sys.executable, "-m", "cusep", "export", str(run), str(model)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wrong = subprocess.run([sys.executable, "-m", "cusep", "export", str(run),
                            str(tmp_path / "other"), "--threshold", "0.2"],
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1 and "--threshold is for detector runs" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not (tmp_path / "other").exists()
    config = json.loads((model / "config.json").read_text())
    assert config["training"]["steps"] == 4 and "cusep train" in config["training"]["command"]
    assert "valid_si_sdr" in config["metrics"]
    mix = next(urmp_data.glob("*/AuMix_*.wav"))
    out = tmp_path / "sep"
    done = subprocess.run([sys.executable, "-m", "cusep", "separate", str(mix), "-i", "vn,vc",
                           "-m", str(model), "-o", str(out), "-d", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / mix.stem / "vn.wav").exists() and (out / mix.stem / "vc.wav").exists()


def test_ddp_two_processes_on_cpu(urmp_data: Path, tmp_path: Path) -> None:
    """exp03 (binary masks, BCE on the logits) also checks that the loss goes through DDP."""
    sets = SETS
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "cusep", "train", str(tmp_path / "ddp"), "-p", "exp03",
           "--data", str(urmp_data), "--max-steps", "4", "--max-minutes", "30", "--no-progress",
           "--device", "cpu", *sets]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["step"] == 4
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("problem", ["missing", "empty", "no-data"])
def test_bad_dataset_paths_give_one_clear_line(problem: str, tmp_path: Path) -> None:
    root = tmp_path / "data"
    if problem == "empty":
        root.mkdir()
    extra = () if problem == "no-data" else (f"data.train=['{root}']",)
    cfg = build_config("cusep-label", [*TINY, *extra])
    with pytest.raises(CusepError) as err:
        Trainer(cfg, tmp_path / "run", torch.device("cpu"), log=lambda s: None)
    assert "\n" not in str(err.value)
    if problem != "no-data":
        assert str(root) in str(err.value)


def test_overrides_are_checked() -> None:
    with pytest.raises(CusepError, match="unknown setting"):
        build_config("cusep-label", ["optim.learning_rate=1"])
    with pytest.raises(CusepError, match="unknown preset"):
        build_config("exp99")
    cfg = build_config("exp09", ["optim.lr=3e-4", "model.spectral.freq_scale=log"])
    assert cfg.optim.lr == 3e-4 and cfg.model.spectral.freq_scale == "log"
    assert cfg.model.conditioning == "film-encoder"


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=abc", "optim.lr must be a number"),
    ("optim.lr=-1", "lr must be positive"),
    ("optim.batch_size=0", "batch_size must be at least 1"),
    ("optim.valid_items=0", "valid_items must be at least 1"),
    ("optim.max_steps=abc", "optim.max_steps must be a whole number"),
    ("optim.max_steps=-5", "max_steps must be at least 1"),
    ("optim.seed=1.5", "optim.seed must be a whole number"),
    ("model.instruments=vn", "model.instruments must be a list"),
    ('data.layout="bogus"', "data.layout must be one of 'urmp', 'solos'"),
    ("mixing.gain_db=[1, 2, 3]", "mixing.gain_db must be a list of 2 values"),
    ("mixing.unlabelled=2", "unlabelled must be in"),
])
def test_overrides_of_the_wrong_type_or_range_are_one_line(override: str, message: str) -> None:
    with pytest.raises(CusepError, match=re.escape(message)):
        build_config("cusep-label", [override])


def test_metrics_log_with_a_partial_last_line_is_read_with_a_warning(tmp_path: Path) -> None:
    from cusep.export import read_metrics_log

    good = json.dumps({"step": 1, "valid_loss": 0.5})
    (tmp_path / "metrics.jsonl").write_text(good + "\n" + '{"step": 2, "valid_lo')
    with pytest.warns(UserWarning, match="partial last line"):
        assert read_metrics_log(tmp_path) == [{"step": 1, "valid_loss": 0.5}]
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "valid_lo\n' + good + "\n")
    with pytest.raises(CusepError, match="line 1 is not JSON"):
        read_metrics_log(tmp_path)


def test_ctrl_c_writes_the_checkpoint_of_the_last_step(urmp_data: Path, tmp_path: Path) -> None:
    import signal
    import time

    run = tmp_path / "run"
    sets = SETS
    cmd = [sys.executable, "-m", "cusep", "train", str(run), "--data", str(urmp_data),
           "--max-steps", "100000", "--no-progress", "--device", "cpu", *sets,
           "--set", "optim.checkpoint_every=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = int(re.search(r"interrupted at step (\d+): checkpoint written", err).group(1))
    assert "Traceback" not in err and "--resume" in err
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == step >= 4  # nothing lost: the checkpoint is the last step


@pytest.mark.parametrize("freq_scale", ["linear", "log"])
def test_targets_from_the_used_rows_equal_those_of_every_row(freq_scale: str) -> None:
    from cusep.data.mixing import Batch
    from cusep.spectral import SpectralConfig
    from cusep.train import make_targets

    spec = SpectralConfig(segment=4095, freq_scale=freq_scale, log_rows=64)
    t = torch.arange(4095, dtype=torch.float32) / RATE
    present = torch.zeros(4, 13)
    present[0, [1, 4]] = 1
    present[1, [0, 2, 12]] = 1
    present[2, 5] = 1  # present but silent below: a zero row all the same
    sources = torch.zeros(4, 13, 4095)  # item 3: nothing at all
    for b, k in present.nonzero().tolist():
        f0 = 110.0 * (k + 2) * (1 + 0.1 * b)
        sources[b, k] = sum(torch.sin(2 * torch.pi * h * f0 * t) / h for h in range(1, 6))
    sources[2, 5] = 0
    batch = Batch(sources.sum(1), sources, present, present.sum(1).long())
    got = make_targets(batch, spec)
    want = every_row_targets(batch, spec)
    names = ("inp", "ratio", "binary", "mix_spec", "mix_mag", "src_mag")
    for name in names:
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-6,
                                   atol=1e-6, msg=name)
    empty = Batch(torch.zeros(1, 4095), torch.zeros(1, 13, 4095), torch.zeros(1, 13),
                  torch.zeros(1, dtype=torch.long))
    assert not make_targets(empty, spec).src_mag.any()


@pytest.mark.parametrize("autocast", [False, True])
def test_l2_loss_of_the_labelled_rows_equals_that_of_every_row(autocast: bool) -> None:
    from cusep.model import ConditionedUNet, ModelConfig
    from cusep.train import Targets, separation_loss

    torch.manual_seed(0)
    net = ConditionedUNet(ModelConfig(channels=(8, 16, 32, 64))).eval()
    inp, ratio = torch.rand(4, 1, 64, 32), torch.rand(4, 13, 64, 32)
    context = torch.zeros(4, 13)
    context[0, [1, 3]] = 1
    context[1, [0, 2, 5]] = 1
    context[3, 12] = 1  # item 2: nothing labelled
    t = Targets(inp, ratio, ratio, None, None, None)
    results = []
    for loss_fn in (separation_loss, all_rows_mse):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(net, t, context, "l2", 1.0)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (got, got_grads), (want, want_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    rows = context.ne(0).nonzero(as_tuple=True)
    torch.testing.assert_close(net(inp, context, rows=rows), net(inp, context)[rows])


def test_detector_feature_augmentation_masks_bands_and_spans_and_shifts() -> None:
    from cusep.config import AugmentConfig, build_config
    from cusep.errors import CusepError
    from cusep.train import augment_features

    x = torch.rand(3, 1, 64, 48)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(augment_features(x, AugmentConfig(), g), x)
    freq = augment_features(x, AugmentConfig(freq_masks=1, freq_width=8), g)
    changed_rows = (freq != x).any(dim=3)[:, 0]  # (B, rows)
    for b in range(3):
        rows = changed_rows[b].nonzero().flatten()
        assert len(rows) <= 8
        if len(rows):  # one contiguous band at the item's mean, over every frame
            assert rows.max() - rows.min() + 1 == len(rows)
            torch.testing.assert_close(freq[b, 0, rows], x[b].mean().expand(len(rows), 48))
    span = augment_features(x, AugmentConfig(time_masks=2, time_width=5), g)
    assert (span != x).any(dim=2)[:, 0].sum(1).max() <= 10
    shifted = augment_features(x, AugmentConfig(freq_shift=2), torch.Generator().manual_seed(3))
    assert any(torch.equal(shifted[b, 0, 2:-2], x[b, 0, 2 + s:62 + s])
               for b in range(3) for s in range(-2, 3))
    again = augment_features(x, AugmentConfig(freq_shift=2), torch.Generator().manual_seed(3))
    assert torch.equal(shifted, again)
    assert build_config("cusep-detect", ["augment.time_masks=2"]).augment.time_masks == 2
    with pytest.raises(CusepError, match="freq_width must be 0 or more"):
        build_config("cusep-detect", ["augment.freq_width=-1"])
