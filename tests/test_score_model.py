"""Score-conditioned separation: harmonic combs, perturbed training notes, the widened network,
training on pieces with their scores and separating with one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY

from cusep.config import build_config
from cusep.data.mixing import MixingConfig, MixtureSampler, StemBank, make_generator
from cusep.data.perturb import ScorePerturbation, perturb_notes
from cusep.data.urmp import scan_urmp
from cusep.errors import CusepError
from cusep.guide import ScoreGuide, harmonic_combs, note_array
from cusep.instruments import CODES
from cusep.model import ConditionedUNet, ModelConfig
from cusep.score import Score, ScoreNote, ScorePart
from cusep.separate import Separator
from cusep.train import Trainer, score_inputs, widen_inputs

RATE = 11025
EXACT = ScorePerturbation(jitter=(0.0, 0.0), warp=0.0, drop=0.0, extra=0.0)


def _uniforms(seed: int):
    rng = np.random.default_rng(seed)
    return lambda: float(rng.random())


def test_harmonic_combs_lie_on_the_partials_while_the_note_sounds():
    freqs = np.arange(512) * RATE / 1022
    times = np.arange(100) * 0.02
    combs = harmonic_combs(note_array([ScoreNote(0.5, 1.0, 69)]), freqs, times)  # A4, 440 Hz
    assert combs.shape == (512, 100) and combs.min() >= 0 and combs.max() <= 1
    sounding = (times >= 0.5) & (times <= 1.0)
    near = lambda hz: int(np.argmin(np.abs(freqs - hz)))  # noqa: E731
    for partial in (440, 880, 1320):
        assert combs[near(partial), sounding].min() > 0.9
    assert combs[near(660), sounding].max() < 0.01  # between the first two partials
    assert combs[:, ~sounding].max() == 0
    wide = harmonic_combs(note_array([ScoreNote(0.5, 1.0, 69)]), freqs, times, tolerance=0.1)
    assert wide[near(440), (times >= 0.42) & (times < 0.5)].min() > 0.9


def test_score_guide_inputs_are_the_combs_of_each_class_and_prior_none_keeps_the_masks():
    score = Score(Path("s.mid"), (ScorePart("Violin", 40, "vn", (ScoreNote(0.0, 1.0, 76),)),
                                  ScorePart("Cello", 42, "vc", (ScoreNote(0.5, 2.0, 48),))))
    guide = ScoreGuide(score, ("vn", "vc"), RATE, 1022, 256, 64, prior="none")
    starts = np.array([0, 5000])
    assert np.array_equal(guide(starts), np.ones((2, 2, 1, 64), np.float32))
    inputs = guide.inputs(starts, CODES)
    assert inputs.shape == (2, 13, 512, 64)
    others = [i for i, c in enumerate(CODES) if c not in ("vn", "vc")]
    assert not inputs[:, others].any()
    times = (5000 + np.arange(64) * 256) / RATE
    expect = harmonic_combs(note_array(score.parts[1].notes), guide.freqs, times)
    np.testing.assert_array_equal(inputs[1, CODES.index("vc")], expect)


def test_exact_notes_are_cut_to_the_segment_and_perturbed_ones_stay_near_them():
    notes = note_array([ScoreNote(0.5 * i, 0.5 * i + 0.4, 60 + i % 12) for i in range(400)])
    exact = perturb_notes(notes, 10.0, 6.0, EXACT, _uniforms(0))
    inside = notes[(notes[:, 1] > 9.0) & (notes[:, 0] < 17.0)]  # a second's margin
    np.testing.assert_allclose(exact, inside - [10.0, 10.0, 0.0])

    config = ScorePerturbation(jitter=(0.05, 0.05), warp=0.0, drop=0.0, extra=0.0)
    moved = perturb_notes(notes, 10.0, 6.0, config, _uniforms(1))
    ref = notes[(notes[:, 1] > 10 - 1.05) & (notes[:, 0] < 16 + 1.05)] - [10.0, 10.0, 0.0]
    assert moved.shape == ref.shape and np.array_equal(moved[:, 2], ref[:, 2])
    assert np.abs(moved[:, 0] - ref[:, 0]).max() <= 0.1 + 1e-9  # shift + own jitter
    assert np.abs(moved[:, 0] - ref[:, 0]).max() > 0.01
    assert np.array_equal(moved, perturb_notes(notes, 10.0, 6.0, config, _uniforms(1)))

    long = perturb_notes(notes, 0.0, 200.0, ScorePerturbation(drop=0.2, extra=0.0),
                         _uniforms(2))
    assert 0.7 < len(long) / 400 < 0.9  # about a fifth dropped
    extra = perturb_notes(notes, 0.0, 200.0, ScorePerturbation(drop=0.0, extra=0.2),
                          _uniforms(3))
    assert 1.1 < len(extra) / 400 < 1.3
    with pytest.raises(CusepError, match="score drop"):
        ScorePerturbation(drop=1.0)


def test_the_widened_twin_of_a_model_separates_exactly_as_the_model():
    config = ModelConfig(channels=(4, 8, 16), dropout=0.0)
    torch.manual_seed(0)
    plain = ConditionedUNet(config).eval()
    twin = ConditionedUNet(ModelConfig(channels=(4, 8, 16), dropout=0.0, score_input=True))
    assert twin.config.in_channels == 14
    twin.load_state_dict(widen_inputs(plain.state_dict(), twin.state_dict()))
    twin.eval()
    mix = torch.randn(2, 1, 64, 32)
    labels = torch.zeros(2, 13)
    labels[:, [0, 2]] = 1
    combs = torch.rand(2, 13, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(twin(torch.cat([mix, combs], 1), labels), plain(mix, labels))
    with pytest.raises(ValueError, match="14 input channel"):
        twin(mix, labels)
    with pytest.raises(ValueError, match="not visual"):
        ModelConfig(score_input=True, conditioning="film-bottleneck",
                    visual=__import__("cusep.visual", fromlist=["VisualConfig"]).VisualConfig(),
                    context_dim=1024)


def test_batches_carry_the_named_sources_notes(urmp_data: Path):
    bank = StemBank.from_urmp(scan_urmp(urmp_data), RATE, notes=True)
    assert bank.piece_notes is not None and len(bank.piece_notes) == len(bank.pieces) == 6
    sampler = MixtureSampler(bank, MixingConfig(segment=16383, score=EXACT), notes=True)
    batch = sampler.draw(6, make_generator(0))
    assert batch.notes is not None and len(batch.notes) == 6
    for b, item in enumerate(batch.notes):
        assert sorted(c for c, _ in item) == batch.present[b].nonzero().flatten().tolist()
    # the notes say where each source's energy is: most of it lies on its own combs
    from cusep.spectral import SpectralConfig
    from cusep.train import make_targets

    spec = SpectralConfig(segment=16383)
    combs = score_inputs(batch.notes, 13, spec, spec.frames)
    t = make_targets(batch, spec, combs)
    assert t.inp.shape[1] == 14
    own = [float((t.src_mag[b, c] ** 2 * (combs[b, c] > 0.5)).sum()
                 / (t.src_mag[b, c] ** 2).sum())
           for b, item in enumerate(batch.notes) for c, _ in item
           if (t.src_mag[b, c] > 0).any()]
    assert np.mean(own) > 0.8
    with pytest.raises(CusepError, match="scores"):
        MixtureSampler(StemBank.from_urmp(scan_urmp(urmp_data), RATE), MixingConfig(),
                       notes=True)


def test_a_piece_without_its_score_is_skipped(urmp_data: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(urmp_data, root)
    first = sorted(root.iterdir())[0]
    for sco in first.glob("Sco_*.mid"):
        sco.unlink()
    bank = StemBank.from_urmp(scan_urmp(root), RATE, notes=True)
    assert len(bank.pieces) == len(bank.piece_notes) == 5
    assert bank.skipped and "no Sco_*.mid" in bank.skipped[0][1]


def test_a_score_model_trains_on_scored_pieces_and_separates_with_a_score(urmp_data: Path,
                                                                          tmp_path: Path):
    cfg = build_config("cusep-score", [*TINY, f"data.train=['{urmp_data}']",
                                       "optim.max_steps=2"])
    trainer = Trainer(cfg, tmp_path / "run", torch.device("cpu"), log=lambda s: None)
    assert trainer.model.config.in_channels == 14
    assert np.isfinite(trainer.train_step())
    sep = Separator(trainer.model.eval(), device="cpu")
    rng = np.random.default_rng(0)
    mix = (0.1 * rng.standard_normal(RATE * 2)).astype(np.float32)
    with pytest.raises(CusepError, match="score-conditioned"):
        sep.separate(mix, RATE, "vn,vc")
    score = Score(Path("s.mid"), (ScorePart("Violin", 40, "vn", (ScoreNote(0.0, 1.5, 76),)),
                                  ScorePart("Cello", 42, "vc", (ScoreNote(0.2, 2.0, 48),))))
    for prior in ("none", "harmonic"):
        stems = sep.separate(mix, RATE, "vn,vc", guide=sep.score_guide(score, ("vn", "vc"),
                                                                         prior))
        np.testing.assert_allclose(stems["vn"] + stems["vc"], mix, atol=1e-4)


def test_the_registry_names_the_score_model(tmp_path: Path, make_model_dir):
    import json

    from cusep.checkpoint import role_model

    shutil.copytree(make_model_dir("tiny"), tmp_path / "plain")
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"default": "plain", "score": "plain",
                                    "plain": {"path": "plain"}}))
    assert role_model("score", registry) == "plain" and role_model("detector", registry) is None
    registry.write_text(json.dumps({"score": "nope", "plain": {"path": "plain"}}))
    with pytest.raises(CusepError, match="registry score 'nope'"):
        role_model("score", registry)
