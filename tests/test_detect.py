"""Instrument detection: the network, its metrics, training, export/load, ``cusep detect`` and
``--instruments auto`` (mechanics on tiny models whose outputs are set by their biases)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import cusep
from cusep.checkpoint import load_detector, load_model, resolve_model, save_model_dir
from cusep.config import build_config
from cusep.errors import CusepError
from cusep.export import export_run
from cusep.instruments import CODES
from cusep.metrics import (
    average_precision,
    best_class_thresholds,
    best_threshold,
    detection_metrics,
    f1_scores,
)
from cusep.model import DetectorConfig, InstrumentDetector, attention_pool
from cusep.spectral import SpectralConfig, features
from cusep.train import Trainer, load_weights

RATE = 11025
SMALL = SpectralConfig(freq_scale="log", log_rows=32, segment=4095)
TINY = [
    "detector.channels=[8, 16]",
    "detector.hidden=32",
    "detector.spectral.log_rows=32",
    "detector.spectral.segment=8191",
    "mixing.segment=8191",
    "optim.batch_size=8",
    "optim.valid_items=32",
    "optim.valid_every=4",
    "optim.checkpoint_every=4",
]


def tiny_detector(seed: int = 0, **overrides) -> InstrumentDetector:
    config = DetectorConfig(**{"channels": (4, 8), "hidden": 16, "spectral": SMALL, **overrides})
    torch.manual_seed(seed)
    return InstrumentDetector(config).eval()


def biased_detector(present: tuple[str, ...], threshold: float = 0.5) -> InstrumentDetector:
    """A detector whose frame logits are +6 for ``present`` and -6 for the rest, whatever the
    input: sigmoid 0.998 / 0.002."""
    model = tiny_detector(threshold=threshold)
    with torch.no_grad():
        model.frame_head.weight.zero_()
        model.frame_head.bias.copy_(torch.tensor([6.0 if c in present else -6.0 for c in CODES]))
    return model


def save_detector(path: Path, model: InstrumentDetector) -> Path:
    return save_model_dir(path, model, model.config, dtype=torch.float32)





@pytest.fixture
def track(tmp_path: Path, make_signal) -> Path:
    """A 2.5 s stereo wav at 22050 Hz."""
    path = tmp_path / "in" / "mix.wav"
    path.parent.mkdir()
    sf.write(path, make_signal(22050, 2.5, channels=2).T, 22050)
    return path


# ----------------------------------------------------------------------------- the network


def test_detector_shapes_and_pooling() -> None:
    model = tiny_detector()
    inp, _ = features(torch.randn(3, SMALL.segment) * 0.1, SMALL)
    assert inp.shape == (3, 1, 32, 16)
    clip, frames = model(inp)
    assert clip.shape == (3, 13) and frames.shape == (3, 13, 4)
    z = torch.randn(2, 13, 5)
    torch.testing.assert_close(attention_pool(z, torch.zeros_like(z)), z.mean(-1))
    peaked = torch.full_like(z, -50.0)
    peaked[..., 2] = 50.0  # all attention on frame 2
    torch.testing.assert_close(attention_pool(z, peaked), z[..., 2])
    with pytest.raises(ValueError, match="multiple"):
        DetectorConfig(spectral=SpectralConfig(freq_scale="log", log_rows=100))
    with pytest.raises(ValueError, match="threshold"):
        DetectorConfig(threshold=0.0)


def test_metrics() -> None:
    assert average_precision(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0])) == \
        pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precision(np.array([0.5, 0.4]), np.array([0, 0])))
    probs = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.1]])
    targets = np.array([[1, 0], [1, 1], [0, 0]])
    np.testing.assert_allclose(f1_scores(probs, targets, 0.5), [1.0, 1.0])
    np.testing.assert_allclose(f1_scores(probs, targets, 0.65), [2 / 3, 1.0])
    threshold, f1 = best_threshold(probs, targets)
    assert f1 == 1.0 and 0.3 <= threshold < 0.6
    m = detection_metrics(probs, targets, classes=("vn", "va"))
    assert m["map"] == 1.0 and m["per_class_f1"] == {"vn": 1.0, "va": 1.0}


# ------------------------------------------------------------------------------- training


def test_tiny_detector_learns(urmp_data: Path, tmp_path: Path) -> None:
    cfg = build_config("cusep-detect", [*TINY, f"data.train=['{urmp_data}']",
                                        f"data.valid=['{urmp_data}']", "optim.lr=3e-3"])
    trainer = Trainer(cfg, tmp_path / "run", torch.device("cpu"), log=lambda s: None)
    assert isinstance(trainer.model, InstrumentDetector)
    first = trainer.validate()
    assert set(first) == {"valid_loss", "valid_map", "valid_f1", "valid_threshold"}
    for _ in range(30):
        trainer.train_step()
    last = trainer.validate()
    assert last["valid_loss"] < first["valid_loss"] * 0.9
    assert last["valid_map"] > first["valid_map"]


def test_fit_export_load_round_trip(urmp_data: Path, tmp_path: Path, tiny_model_dir: Path
                                    ) -> None:
    cfg = build_config("cusep-detect", [*TINY, f"data.train=['{urmp_data}']",
                                        "optim.max_steps=8"])
    trainer = Trainer(cfg, tmp_path / "run", torch.device("cpu"), log=lambda s: None)
    trainer.fit(progress=False)
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(log, key=lambda r: r["valid_map"])
    out = export_run(tmp_path / "run", tmp_path / "det")
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "detector" and config["threshold"] == best["valid_threshold"]
    assert config["metrics"]["valid_map"] == best["valid_map"]
    assert "instrument detector" in (out / "README.md").read_text()
    model, mdir = load_detector(out)
    assert model.config.threshold == best["valid_threshold"] and mdir.kind == "detector"
    for key, value in load_weights(tmp_path / "run" / "best.safetensors").items():  # fp16
        expected = value.half().float() if value.is_floating_point() else value
        torch.testing.assert_close(model.state_dict()[key], expected, rtol=0, atol=0)
    chosen = export_run(tmp_path / "run", tmp_path / "det-auto", threshold=0.17)
    assert load_detector(chosen)[0].config.threshold == 0.17
    with pytest.raises(CusepError, match="must be in"):
        export_run(tmp_path / "run", tmp_path / "det-bad", threshold=1.5)
    assert not (tmp_path / "det-bad").exists()
    per_class = dict(zip(CODES, np.linspace(0.1, 0.7, 13).round(2).tolist(), strict=True))
    own = export_run(tmp_path / "run", tmp_path / "det-class", class_thresholds=per_class)
    det = cusep.Detector(own, device="cpu")
    assert det.model.config.class_thresholds == tuple(per_class.values())
    assert det.thresholds == tuple(per_class.values())
    assert cusep.Detector(own, device="cpu", threshold=0.4).thresholds == ()  # given: for all
    for bad, needle in (({"vn": 0.3}, "every class"), ({**per_class, "vn": 0.0}, "(0, 1]")):
        with pytest.raises(CusepError, match=re.escape(needle)):
            export_run(tmp_path / "run", tmp_path / "det-bad", class_thresholds=bad)
        assert not (tmp_path / "det-bad").exists()
    with pytest.raises(CusepError, match="'detector' model, not a separator"):
        load_model(out)
    with pytest.raises(CusepError, match="'separator' model, not a detector"):
        load_detector(tiny_model_dir)


def test_registry_names_the_default_detector(tmp_path: Path) -> None:
    save_detector(tmp_path / "det", tiny_detector())
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"detector": "det-v1", "det-v1": {"path": "det"}}))
    model, mdir = load_detector(None, registry=registry)
    assert mdir.path == tmp_path / "det" and isinstance(model, InstrumentDetector)
    registry.write_text(json.dumps({"det-v1": {"path": "det"}}))
    with pytest.raises(CusepError, match="no default detector"):
        load_detector(None, registry=registry)
    registry.write_text(json.dumps({"detector": "nope", "det-v1": {"path": "det"}}))
    with pytest.raises(CusepError, match="registry detector 'nope'"):
        resolve_model("det-v1", registry=registry)


# ------------------------------------------------------------------------------------ the API


def test_detector_windows_and_decisions(make_signal) -> None:
    det = cusep.Detector(biased_detector(("vn", "cl")), device="cpu")
    audio = make_signal(22050, 2.0, channels=2)  # 2 s: windows of 4095 samples at 11025 Hz
    result = det.detect(audio, 22050)
    assert result.detected == ("vn", "cl")
    assert result.probabilities.shape == (13,) and result.window_probabilities.shape[1] == 13
    n = 22050  # samples at the model rate
    assert len(result.times) == -(-n // SMALL.segment)
    assert result.times[-1] == pytest.approx((n - SMALL.segment) / RATE)  # tail aligned to end
    assert list(result.confidences())[:2] == ["vn", "cl"]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["detected"] == ["vn", "cl"] and len(data["windows"]) == len(result.times)
    silent = det.detect(np.zeros((2, 22050), np.float32), 22050)
    assert silent.detected == () and not silent.probabilities.any()
    with pytest.raises(CusepError, match="empty"):
        det.detect(np.zeros((1, 0), np.float32), 22050)
    with pytest.raises(CusepError, match="NaN"):
        det.detect(np.full(5000, np.nan, np.float32), 22050)


def test_class_thresholds_decide_each_class() -> None:
    probs = np.array([[0.9, 0.35], [0.6, 0.7], [0.3, 0.1], [0.2, 0.2]])
    targets = np.array([[1, 1], [1, 1], [0, 0], [0, 0]])
    chosen = best_class_thresholds(probs, targets, fallback=0.5)
    assert 0.3 <= chosen[0] < 0.6 and 0.2 <= chosen[1] < 0.35  # each class its own F1 = 1
    assert detection_metrics(probs, targets, chosen, ("vn", "va"))["f1"] == 1.0
    assert best_class_thresholds(probs, np.zeros_like(targets), 0.5).tolist() == [0.5, 0.5]
    net = biased_detector(("vn", "cl"))  # both at sigmoid(6) = 0.9975
    config = dataclasses.replace(net.config, class_thresholds=tuple(
        0.999 if c == "cl" else 0.5 for c in CODES))
    net.config = config
    picky = cusep.Detector(net, device="cpu").detect(np.ones(22050, np.float32) * 0.1, 22050)
    assert picky.detected == ("vn",) and picky.per_class  # cl is under its own threshold
    assert "per-instrument thresholds" in picky.threshold_text()
    assert json.loads(json.dumps(picky.to_dict()))["thresholds"]["cl"] == 0.999
    with pytest.raises(ValueError, match="one value in"):
        dataclasses.replace(config, class_thresholds=(0.5, 0.5))


def test_separate_auto_api(tmp_path: Path, short_model_dir: Path, make_signal) -> None:
    audio = make_signal(22050, 2.0)
    both = save_detector(tmp_path / "both", biased_detector(("vn", "vc")))
    stems = cusep.separate(audio, 22050, "auto", model=short_model_dir, detector=both,
                           device="cpu")
    assert sorted(stems) == ["vc", "vn"] and stems["vn"].shape == audio.shape
    none = save_detector(tmp_path / "none", biased_detector(()))
    with pytest.raises(CusepError, match="no instrument detected"):
        cusep.separate(audio, 22050, "auto", model=short_model_dir, detector=none, device="cpu")


# ------------------------------------------------------------------------------------ the CLI


def test_cli_detect_table_and_json(cli, tmp_path: Path, track: Path) -> None:
    det = save_detector(tmp_path / "det", biased_detector(("fl", "hn")))
    code, out, err = cli("detect", track, "--model", det, "--device", "cpu")
    assert code == 0, err
    assert "detected in" in out and "fl 1.00, hn 1.00" in out and "flute" in out
    code, out, err = cli("detect", track, "--model", det, "--json", "--device", "cpu")
    assert code == 0, err
    data = json.loads(out)
    [record] = data["files"]
    assert record["file"] == str(track) and record["detected"] == ["fl", "hn"]
    assert set(record["probabilities"]) == set(CODES) and record["windows"]
    code, out, err = cli("detect", track, "--model", det, "--threshold", "0.999",
                         "--device", "cpu")
    assert code == 0 and "nothing" in out


def test_cli_detect_bad_input(cli, tmp_path: Path, track: Path) -> None:
    det = save_detector(tmp_path / "det", biased_detector(("fl",)))
    bad = tmp_path / "in" / "bad.wav"
    bad.write_bytes(b"not audio")
    code, out, err = cli("detect", track, bad, "--model", det, "--device", "cpu")
    assert code == 1 and "Traceback" not in out + err
    assert "detected in" in out and "bad.wav" in err
    code, out, err = cli("detect", track, "--model", tmp_path / "missing", "--device", "cpu")
    assert code == 1 and "no model directory" in err


def test_cli_separate_auto(cli, tmp_path: Path, track: Path, short_model_dir: Path) -> None:
    det = save_detector(tmp_path / "det", biased_detector(("vn", "vc")))
    out_dir = tmp_path / "out"
    code, out, err = cli("separate", track, "-i", "auto", "--detector", det, "--model",
                         short_model_dir, "-o", out_dir, "--device", "cpu")
    assert code == 0, err
    assert "detected in" in err and "vn 1.00, vc 1.00" in err
    assert sorted(p.name for p in (out_dir / "mix").iterdir()) == ["vc.wav", "vn.wav"]


def test_cli_separate_auto_nothing_detected(cli, tmp_path: Path, track: Path,
                                            short_model_dir: Path) -> None:
    det = save_detector(tmp_path / "det", biased_detector(()))
    out_dir = tmp_path / "out"
    code, out, err = cli("separate", track, "-i", "auto", "--detector", det, "--model",
                         short_model_dir, "-o", out_dir, "--device", "cpu")
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, lines
    assert "no instrument detected" in lines[0] and "nothing written" in lines[0]
    assert not out_dir.exists()


def test_resolving_a_detected_list_by_separation_drops_empty_and_doubled_stems(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    from cusep.instruments import BY_CODE

    path = Path(__file__).resolve().parents[1] / "scripts" / "eval_detect.py"
    spec = importlib.util.spec_from_file_location("eval_detect", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "eval_detect", mod)  # its dataclasses look it up
    spec.loader.exec_module(mod)
    assert BY_CODE["vn"].family == BY_CODE["vc"].family
    t = np.arange(22050) / 11025
    line = np.sin(2 * np.pi * 440 * t) + 0.5 * np.sin(2 * np.pi * 880 * t)
    other = np.sin(2 * np.pi * 196 * t * (1 + 0.1 * t))
    stems = {"vn": line, "fl": other, "va": 0.02 * other, "vc": 0.8 * line}
    ev = mod.evidence(stems, sum(stems.values()))
    assert ev.similarity[0, 3] > 0.99 > ev.similarity[0, 1]
    probs = {"vn": 0.9, "fl": 0.7, "va": 0.5, "vc": 0.4}
    kept, dropped = mod.resolve(list(stems), probs, ev, mod.ResolveConfig(0.01, 0.9))
    assert kept == ["vn", "fl"] and set(dropped) == {"va", "vc"}
    assert "energy" in dropped["va"] and "line of vn" in dropped["vc"]
    assert mod.resolve(list(stems), probs, ev, mod.ResolveConfig(0.0, 2.0)) == (list(stems), {})
