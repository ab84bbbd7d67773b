"""Dataset readers (URMP and Solos layouts) and the training-mixture samplers."""

from __future__ import annotations

import json
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cusep.data import (
    URMP_SINGLE_INSTRUMENT,
    MixingConfig,
    MixtureSampler,
    StemBank,
    exclude_single_instrument,
    load_mono,
    make_generator,
    parse_piece_name,
    scan_solos,
    scan_urmp,
    select_split,
    split_solos,
)
from cusep.errors import CusepError
from cusep.instruments import CODES

URMP_RATE = 48000
SEG = 2048

# piece folder -> (instrument per player, base frequency of the piece)
URMP_PIECES = {
    "01_Jupiter_vn_vc": (("vn", "vc"), 220.0),
    "02_Sonata_vn_vn": (("vn", "vn"), 330.0),
    "09_Jesus_tpt_vn": (("tpt", "vn"), 440.0),
    "24_Pirates_vn_vn_va_vc": (("vn", "vn", "va", "vc"), 550.0),
    "31_Dance_fl_cl_ob": (("fl", "cl", "ob"), 660.0),
}


def _tone(freq: float, seconds: float, rate: int, seed: int) -> np.ndarray:
    """A modulated sinusoid plus a little seeded noise, so every segment is identifiable."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    env = 1.0 + 0.5 * np.sin(2 * np.pi * (1.3 + seed % 5) * t)
    return (0.3 * env * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def _write_piece(root: Path, folder: str, codes: tuple[str, ...], freq: float, seconds=1.0):
    d = root / folder
    d.mkdir(parents=True)
    title = "_".join(folder.split("_")[:2])
    stems = []
    for k, code in enumerate(codes, start=1):
        x = _tone(
            freq * (1 + 0.25 * k),
            seconds,
            URMP_RATE,
            seed=zlib.crc32(f"{folder}{k}".encode()) % 1000,
        )
        sf.write(d / f"AuSep_{k}_{code}_{title}.wav", x, URMP_RATE)
        stems.append(x)
    sf.write(d / f"AuMix_{folder}.wav", np.sum(stems, axis=0), URMP_RATE)
    (d / f"Vid_{folder}.mp4").write_bytes(b"")
    (d / f"F0s_1_{codes[0]}_{title}.txt").write_text("0 0\n")
    return d


@pytest.fixture(scope="module")
def urmp_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("urmp")
    for folder, (codes, freq) in URMP_PIECES.items():
        _write_piece(root, folder, codes, freq)
    # corrupt second player of 09_Jesus: the scan accepts it, reading skips the piece
    (root / "09_Jesus_tpt_vn" / "AuSep_2_vn_09_Jesus.wav").write_bytes(b"RIFF\x00\x01garbage")
    # folder name says fl but the AuSep file is cl
    bad = _write_piece(root, "07_Gavotte_vn_fl", ("vn", "cl"), 770.0)
    assert (bad / "AuSep_2_cl_07_Gavotte.wav").exists()
    _write_piece(root, "08_Air_vn_xyz", ("vn", "vn"), 880.0)  # unknown instrument code
    (root / "Supplementary").mkdir()
    (root / "notes.txt").write_text("not a piece")
    return root


@pytest.fixture(scope="module")
def urmp_bank(urmp_root) -> StemBank:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pieces = exclude_single_instrument(scan_urmp(urmp_root))
    return StemBank.from_urmp(pieces, sample_rate=11025)


def _solos_root(root: Path, counts: dict[str, int], seconds: float = 1.0) -> Path:
    for i, (folder, n) in enumerate(counts.items()):
        d = root / "wav11k" / folder
        d.mkdir(parents=True)
        for j in range(n):
            x = _tone(200.0 + 40 * i + 5 * j, seconds, 11025, seed=100 * i + j)
            sf.write(d / f"id{j:02d}.wav", x, 11025)
    return root


# -- URMP layout -------------------------------------------------------------------------------


def test_scan_urmp_reads_pieces_and_warns_about_bad_folders(urmp_root):
    with pytest.warns(UserWarning) as record:
        pieces = scan_urmp(urmp_root)
    messages = "\n".join(str(w.message) for w in record)
    assert "07_Gavotte_vn_fl" in messages and "disagree" in messages
    assert "08_Air_vn_xyz" in messages and "xyz" in messages
    assert "Supplementary" in messages
    assert "notes.txt" not in messages
    assert [p.name for p in pieces] == sorted(URMP_PIECES)
    jupiter = pieces[0]
    assert jupiter.instruments == ("vn", "vc")
    assert jupiter.mix is not None and jupiter.mix.name == "AuMix_01_Jupiter_vn_vc.wav"
    assert jupiter.video is not None and jupiter.video.suffix == ".mp4"
    assert [t.player for t in jupiter.tracks] == [1, 2]
    pirates = next(p for p in pieces if p.name.startswith("24_"))
    assert pirates.instruments == ("vn", "va", "vc")
    assert [t.player for t in pirates.sources["vn"]] == [1, 2]
    assert list(pirates.sources) == ["vn", "va", "vc"]


def test_exclude_single_instrument(urmp_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pieces = scan_urmp(urmp_root)
    kept = exclude_single_instrument(pieces)
    assert "02_Sonata_vn_vn" in URMP_SINGLE_INSTRUMENT
    assert "02_Sonata_vn_vn" in [p.name for p in pieces]
    assert "02_Sonata_vn_vn" not in [p.name for p in kept]
    assert len(kept) == len(pieces) - 1


def test_require_mix_skips_pieces_without_mix(tmp_path):
    _write_piece(tmp_path, "01_Jupiter_vn_vc", ("vn", "vc"), 220.0)
    d = _write_piece(tmp_path, "03_Dance_fl_cl", ("fl", "cl"), 330.0)
    (d / "AuMix_03_Dance_fl_cl.wav").unlink()
    assert len(scan_urmp(tmp_path)) == 2
    with pytest.warns(UserWarning, match="03_Dance_fl_cl"):
        pieces = scan_urmp(tmp_path, require_mix=True)
    assert [p.name for p in pieces] == ["01_Jupiter_vn_vc"]


def test_synth_layout_with_manifest_splits(tmp_path):
    assert parse_piece_name("0007_bwv269_vn_va_vc_db") == ("0007_bwv269", ("vn", "va", "vc", "db"))
    assert parse_piece_name("Supplementary") is None
    _write_piece(tmp_path, "0007_bwv269_vn_va_vc_db", ("vn", "va", "vc", "db"), 200.0, 0.2)
    _write_piece(tmp_path, "0008_bwv270_fl_ob", ("fl", "ob"), 300.0, 0.2)
    manifest = {"pieces": [{"name": "0007_bwv269_vn_va_vc_db", "split": "train"},
                           {"name": "0008_bwv270_fl_ob", "split": "test"}]}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    pieces = scan_urmp(tmp_path)
    assert [p.split for p in pieces] == ["train", "test"]
    assert [p.name for p in select_split(pieces, "test")] == ["0008_bwv270_fl_ob"]
    assert pieces[0].instruments == ("vn", "va", "vc", "db")


@pytest.mark.parametrize("scan", [scan_urmp, scan_solos])
def test_scan_errors_name_the_path(tmp_path, scan):
    missing = tmp_path / "nowhere"
    with pytest.raises(CusepError, match="nowhere"):
        scan(missing)
    a_file = tmp_path / "file.wav"
    a_file.write_bytes(b"")
    with pytest.raises(CusepError, match="file.wav"):
        scan(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CusepError, match="empty"):
        scan(empty)


# -- Solos layout ------------------------------------------------------------------------------


def test_scan_and_split_solos(tmp_path):
    root = _solos_root(tmp_path, {"Violin": 5, "Cello": 1, "DoubleBass": 3})
    (root / "wav11k" / "Piano").mkdir()
    (root / "wav11k" / "Piano" / "a.wav").write_bytes(b"")
    with pytest.warns(UserWarning, match="Piano"):
        files = scan_solos(root)
    assert list(files) == ["vn", "vc", "db"]  # class order
    assert [p.name for p in files["vn"]] == [f"id{j:02d}.wav" for j in range(5)]
    with pytest.warns(UserWarning):
        assert scan_solos(root / "wav11k") == files
    train, valid = split_solos(files)
    assert [p.name for p in valid["vn"]] == ["id04.wav"]
    assert len(train["vn"]) == 4
    assert train["vc"] == files["vc"] and "vc" not in valid
    assert [p.name for p in valid["db"]] == ["id02.wav"]
    for code in files:
        assert sorted(train[code] + valid.get(code, [])) == files[code]


# -- StemBank ----------------------------------------------------------------------------------


def test_bank_from_urmp_merges_players_and_skips_corrupt(urmp_root, urmp_bank):
    bank = urmp_bank
    assert "09_Jesus_tpt_vn" not in bank.names
    assert any(p.name == "AuSep_2_vn_09_Jesus.wav" for p, _ in bank.skipped)
    assert bank.names == ["01_Jupiter_vn_vc", "24_Pirates_vn_vn_va_vc", "31_Dance_fl_cl_ob"]
    codes, audio = bank.pieces[1]
    assert codes == ("vn", "va", "vc") and audio.shape == (3, 11025)
    folder = urmp_root / "24_Pirates_vn_vn_va_vc"
    v1 = load_mono(folder / "AuSep_1_vn_24_Pirates.wav", 11025)
    v2 = load_mono(folder / "AuSep_2_vn_24_Pirates.wav", 11025)
    torch.testing.assert_close(audio[0], v1 + v2)
    minutes = bank.minutes_per_instrument()
    assert minutes["vn"] == pytest.approx(2 / 60) and minutes["fl"] == pytest.approx(1 / 60)
    assert bank.instruments == ("vn", "va", "vc", "fl", "ob", "cl")


def test_bank_from_solos_skips_corrupt(tmp_path):
    root = _solos_root(tmp_path, {"Violin": 2, "Flute": 2})
    (root / "wav11k" / "Flute" / "id99.wav").write_bytes(b"RIFFnot really")
    files = scan_solos(root)
    bank = StemBank.from_solos(files)
    assert [p.name for p, _ in bank.skipped] == ["id99.wav"]
    assert {c: len(v) for c, v in bank.solos.items()} == {"vn": 2, "fl": 2}
    assert bank.solos["vn"][0].dtype == torch.float32 and bank.solos["vn"][0].dim() == 1


# -- MixtureSampler ----------------------------------------------------------------------------


def _check_batch(batch, b: int, lo: int, hi: int) -> None:
    assert batch.mix.shape == (b, SEG)
    assert batch.sources.shape == (b, len(CODES), SEG)
    assert batch.present.shape == (b, len(CODES)) and batch.n_sources.dtype == torch.long
    torch.testing.assert_close(batch.sources.sum(1), batch.mix, atol=1e-5, rtol=0)
    nonzero = batch.sources.abs().amax(-1) > 0
    assert torch.equal(nonzero, batch.present.bool())
    assert torch.equal(batch.n_sources, batch.present.sum(1).long())
    assert int(batch.n_sources.min()) >= lo and int(batch.n_sources.max()) <= hi
    assert float(batch.mix.abs().max()) <= 1.0


def _match(row: torch.Tensor, stems: list[tuple[str, int, torch.Tensor]]):
    """(piece name, offset) of the stem segment ``row`` is a scaled copy of, by correlation."""
    best = (-1.0, None, None)
    r = row / row.norm()
    for name, _, stem in stems:
        windows = stem.unfold(0, row.numel(), 1)
        corr = windows @ r / windows.norm(dim=1).clamp_min(1e-12)
        v, off = corr.max(0)
        if float(v) > best[0]:
            best = (float(v), name, int(off))
    assert best[0] > 0.9999
    return best[1], best[2]


def test_ensemble_items_come_from_one_piece_at_one_offset(urmp_bank):
    cfg = MixingConfig(segment=SEG, ensemble_ratio=1.0, min_sources=2, max_sources=7)
    sampler = MixtureSampler(urmp_bank, cfg)
    batch = sampler.draw(6, make_generator(0))
    _check_batch(batch, 6, 2, 3)
    by_class: dict[int, list] = {}
    for name, (codes, audio) in zip(urmp_bank.names, urmp_bank.pieces, strict=True):
        for row, code in enumerate(codes):
            by_class.setdefault(CODES.index(code), []).append((name, row, audio[row]))
    for b in range(6):
        rows = batch.present[b].nonzero()[:, 0].tolist()
        found = {_match(batch.sources[b, c], by_class[c]) for c in rows}
        assert len(found) == 1  # one piece, one offset for all its sources


def test_mix_and_separate_and_curriculum(urmp_bank):
    cfg = MixingConfig(segment=SEG, ensemble_ratio=0.0, min_sources=2, max_sources=5)
    sampler = MixtureSampler(urmp_bank, cfg)
    batch = sampler.draw(32, make_generator(1))
    _check_batch(batch, 32, 2, 5)
    assert len(set(batch.n_sources.tolist())) > 1  # k varies
    sampler.set_max_sources(2)
    _check_batch(sampler.draw(16, make_generator(2)), 16, 2, 2)
    sampler.set_max_sources(1)
    _check_batch(sampler.draw(8, make_generator(3)), 8, 1, 1)


def test_paper_normalisation_divides_targets_by_k(urmp_bank):
    cfg = MixingConfig(segment=SEG, ensemble_ratio=0.5, normalise="paper", gain_db=(0.0, 0.0))
    batch = MixtureSampler(urmp_bank, cfg).draw(12, make_generator(4))
    torch.testing.assert_close(batch.sources.sum(1), batch.mix, atol=1e-6, rtol=0)
    k = batch.n_sources.float().view(-1, 1)
    present = batch.present.bool()
    expected = (1 / k).expand(-1, len(CODES))[present]
    torch.testing.assert_close(batch.sources.amax(-1)[present], expected)
    torch.testing.assert_close(batch.sources.amin(-1)[present], -expected)


def test_draw_is_deterministic_given_the_generator(urmp_bank):
    cfg = MixingConfig(segment=SEG, ensemble_ratio=0.5, noise_std=0.01)
    sampler = MixtureSampler(urmp_bank, cfg)
    a = sampler.draw(8, make_generator(7))
    b = sampler.draw(8, make_generator(7))
    c = sampler.draw(8, make_generator(8))
    d = sampler.draw(8, make_generator(7, rank=1))
    for x, y in ((a.mix, b.mix), (a.sources, b.sources), (a.present, b.present)):
        assert torch.equal(x, y)
    assert not torch.equal(a.mix, c.mix) and not torch.equal(a.mix, d.mix)
    # noise goes into the mix only
    residual = a.mix - a.sources.sum(1)
    assert 0.005 < float(residual.std()) < 0.02


def test_solos_bank_needs_ensemble_ratio_zero(tmp_path):
    files = scan_solos(_solos_root(tmp_path, {"Violin": 2, "Flute": 2, "Tuba": 1}))
    bank = StemBank.from_solos(files)
    with pytest.raises(CusepError, match="ensemble_ratio"):
        MixtureSampler(bank, MixingConfig(segment=SEG))
    sampler = MixtureSampler(bank, MixingConfig(segment=SEG, ensemble_ratio=0.0, max_sources=7))
    batch = sampler.draw(8, make_generator(0))
    _check_batch(batch, 8, 2, 3)
    classes = {CODES.index(c) for c in ("vn", "fl", "tba")}
    assert set(batch.present.nonzero()[:, 1].tolist()) <= classes


def test_short_files_are_padded_and_silence_is_redrawn(tmp_path):
    root = tmp_path / "wav11k"
    (root / "Violin").mkdir(parents=True)
    (root / "Cello").mkdir()
    short = _tone(300.0, 0.05, 11025, seed=1)  # 551 samples < segment
    sf.write(root / "Violin" / "short.wav", short, 11025)
    gappy = _tone(150.0, 2.0, 11025, seed=2)
    gappy[: int(0.6 * gappy.size)] = 0.0  # 60 % digital silence
    sf.write(root / "Cello" / "gappy.wav", gappy, 11025)
    bank = StemBank.from_solos(scan_solos(tmp_path))
    base = MixingConfig(segment=SEG, ensemble_ratio=0.0, min_active=None, gain_db=(0.0, 0.0))
    plain = MixtureSampler(bank, base).draw(32, make_generator(0))
    vn, vc = CODES.index("vn"), CODES.index("vc")
    assert torch.all(plain.sources[:, vn, short.size :] == 0)  # zero padding after the file
    assert torch.all(plain.sources[:, vn, : short.size].abs().amax(-1) > 0)
    silent = plain.sources[:, vc].abs().amax(-1) == 0
    assert silent.any()  # without the activity check, silent cello segments occur
    active = MixtureSampler(bank, replace(base, min_active=-50.0, active_tries=30))
    batch = active.draw(32, make_generator(0))
    assert torch.all(batch.sources[:, vc].abs().amax(-1) > 0)
