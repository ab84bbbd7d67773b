"""The sampler of recorded notes (``--fonts <bank>``) and the recording effects of ``cusep synth``.

Every bank here is made in the test: harmonic tones written as FLAC with a manifest in the
format of the curated bank (no ``../shared`` needed).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cusep.data.recording import RecordingConfig, apply_recording
from cusep.data.sampler import BANK_RATE, load_bank, render_part, resolve_bank, valid_files
from cusep.errors import CusepError

RATE = 44100


def _tone(midi: float, seconds: float, rate: int = RATE, level: float = 0.3) -> np.ndarray:
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6) if k * f0 < rate / 2)
    env = np.minimum(1.0, t / 0.02) * np.minimum(1.0, (seconds - t) / 0.05)
    return (level * x * env).astype(np.float32)


def make_bank(root: Path, notes: dict[str, list[float]], seconds: float = 1.0,
              cents_off: float = 0.0) -> Path:
    """A bank with one file per (code, midi); its recorded pitch is ``cents_off`` sharp."""
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for code, pitches in notes.items():
        for midi in pitches:
            name = f"{code}/{code}-{midi:g}.flac"
            (root / code).mkdir(exist_ok=True)
            sf.write(str(root / name), _tone(midi + cents_off / 100, seconds), RATE)
            records.append({"file": name, "instrument": code, "midi": midi,
                            "cents_off": cents_off, "dynamic": "mf",
                            "articulation": "sustain", "variant": "solo", "source": "test",
                            "licence": "CC0 (made in the test)"})
    (root / "manifest.json").write_text(json.dumps(records))
    return root


def _f0(x: np.ndarray, rate: int) -> float:
    """Strongest spectral peak with parabolic interpolation (Hz)."""
    w = x * np.hanning(x.size)
    spec = np.abs(np.fft.rfft(w, 8 * x.size))
    k = int(np.argmax(spec[1:])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / (8 * x.size)


def _note(pitch: int, on: float, off: float, velocity: int = 90) -> list:
    return [(on, 2, ("note_on", pitch, velocity)), (off, 1, ("note_off", pitch, 0))]


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    # train notes: all but the held-out ones; five per instrument so both splits have some
    return make_bank(tmp_path_factory.mktemp("bank"), {"vn": [55, 60, 64, 67, 72],
                                                         "vc": [36, 43, 48, 55, 60]},
                     cents_off=20.0)


def test_note_at_its_pitch_and_length_past_the_recording(bank):
    # 2.5 s asked of 1 s recordings: the note is looped; the 20-cent detuning is corrected
    y = render_part(_note(62, 0.5, 3.0), "vn", bank, "train", 4.0, np.random.default_rng(0))
    assert y.shape == (4 * BANK_RATE,)
    f0 = _f0(y[int(0.7 * BANK_RATE):int(2.8 * BANK_RATE)], BANK_RATE)
    cents = 1200 * np.log2(f0 / (440 * 2 ** ((62 - 69) / 12)))
    assert abs(cents) < 10, cents
    frame = BANK_RATE // 100
    env = np.sqrt(np.mean(y[: y.size // frame * frame].reshape(-1, frame) ** 2, axis=1))
    on = np.flatnonzero(env > env.max() * 0.1)
    assert abs(on[0] / 100 - 0.5) < 0.03  # starts at the note-on
    assert 3.0 <= on[-1] / 100 <= 3.0 + 0.4  # holds to the note-off, then a short release
    assert env[int(1.2 * 100):int(2.8 * 100)].min() > env.max() * 0.3  # no gap in the loop


def test_velocity_orders_loudness_and_expression_scales(bank):
    rng = lambda: np.random.default_rng(1)  # noqa: E731
    levels = [np.sqrt(np.mean(render_part(_note(60, 0.1, 1.0, v), "vc", bank, "train", 1.5,
                                          rng()) ** 2)) for v in (30, 60, 90, 120)]
    assert all(a < b for a, b in zip(levels, levels[1:], strict=False))
    quiet = _note(60, 0.1, 1.0, 90) + [(0.0, 0, ("control_change", 11, 40))]
    assert np.sqrt(np.mean(render_part(quiet, "vc", bank, "train", 1.5, rng()) ** 2)) \
        < 0.5 * levels[2]


def test_splits_hold_out_other_recordings(bank):
    records = json.loads((bank / "manifest.json").read_text())
    held = valid_files(records)
    train = {n.file for v in load_bank(str(bank), "train").values() for n in v}
    valid = {n.file for v in load_bank(str(bank), "valid").values() for n in v}
    assert valid == held and not train & valid and train | valid == {r["file"] for r in records}
    assert {f.split("/")[0] for f in valid} == {"vn", "vc"}  # every instrument in both


def test_bank_specs(bank, tmp_path, monkeypatch):
    assert resolve_bank(str(bank)) == bank
    assert resolve_bank("fluidr3") is None
    monkeypatch.delenv("CUSEP_SAMPLES", raising=False)
    with pytest.raises(CusepError, match="CUSEP_SAMPLES"):
        resolve_bank("samples")
    monkeypatch.setenv("CUSEP_SAMPLES", str(bank))
    assert resolve_bank("samples") == bank
    (tmp_path / "empty").mkdir()
    with pytest.raises(CusepError, match="manifest.json"):
        resolve_bank(str(tmp_path / "empty"))


def test_recording_effects_reproducible_and_off_is_identity():
    rng = np.random.default_rng(0)
    stems = rng.standard_normal((3, 11025 * 2)) * 0.1
    on = RecordingConfig(mic_eq_db=6, room=1.0, noise_db=50, level_db=4)
    a, rec_a = apply_recording(stems, 11025, on, np.random.default_rng(5))
    b, rec_b = apply_recording(stems, 11025, on, np.random.default_rng(5))
    c, _ = apply_recording(stems, 11025, on, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert rec_a == rec_b and rec_a["room"] is not None and len(rec_a["players"]) == 3
    assert not np.allclose(a, c) and a.shape == stems.shape
    same, rec = apply_recording(stems, 11025, RecordingConfig(), np.random.default_rng(5))
    assert same is stems and rec is None


def test_room_adds_a_decaying_tail():
    x = np.zeros((1, 11025))
    x[0, 100] = 1.0
    y, rec = apply_recording(x, 11025, RecordingConfig(room=1.0), np.random.default_rng(2))
    tail = y[0, 400:]  # after the direct path and early reflections
    assert np.abs(tail).max() > 1e-4
    first, last = np.sum(tail[:2000] ** 2), np.sum(tail[-4000:] ** 2)
    assert last < first  # decays


music21 = pytest.importorskip("music21")
pytest.importorskip("mido")


def test_dataset_with_bank_sums_exactly_and_is_reproducible(bank, tmp_path):
    from cusep.data.synth import SynthConfig, render_dataset

    config = SynthConfig(split="train", fonts=(str(bank),), instruments=("vn", "vc"),
                         sources=("bach",), excerpt_seconds=4.0, minutes_per_instrument=0,
                         max_pieces=2, min_players=2, max_players=2, seed=4, mic_eq_db=6,
                         room=1.0, noise_db=55, level_db=4)
    cache = tmp_path / "scores"
    manifest = render_dataset(tmp_path / "a", config, progress=False, cache_dir=cache)
    render_dataset(tmp_path / "b", config, progress=False, cache_dir=cache)
    render_dataset(tmp_path / "c", replace(config, room=0.0, mic_eq_db=0, noise_db=0,
                                           level_db=0), progress=False, cache_dir=cache)
    assert len(manifest["pieces"]) == 2
    for piece in manifest["pieces"]:
        assert piece["renderer"] == "sampler" and piece["recording"]["room"] is not None
        folder = tmp_path / "a" / piece["name"]
        stems = [sf.read(str(p), dtype="int16")[0].astype(np.int32)
                 for p in sorted(folder.glob("AuSep_*.wav"))]
        mix = sf.read(str(next(folder.glob("AuMix_*.wav"))), dtype="int16")[0]
        np.testing.assert_array_equal(np.sum(stems, axis=0), mix)
        for p in folder.glob("*.wav"):
            assert p.read_bytes() == (tmp_path / "b" / piece["name"] / p.name).read_bytes()
            dry = tmp_path / "c" / piece["name"] / p.name
            assert p.read_bytes() != dry.read_bytes()
    card = (tmp_path / "a" / "README.md").read_text()
    assert "Sample bank" in card and "CC0 (made in the test)" in card and "a room on" in card


def test_bank_without_an_instrument_is_refused(bank, tmp_path):
    from cusep.data.synth import SynthConfig, render_dataset

    config = SynthConfig(split="train", fonts=(str(bank),), instruments=("vn", "fl"),
                         sources=("bach",), max_pieces=1, minutes_per_instrument=0)
    with pytest.raises(CusepError, match="no train notes of fl"):
        render_dataset(tmp_path / "x", config, progress=False, cache_dir=tmp_path / "s")
