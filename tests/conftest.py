"""Shared fixtures: tiny model directories (untrained, fixed seed) and synthetic test signals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from cusep.checkpoint import save_model_dir
from cusep.model import ConditionedUNet, ModelConfig
from cusep.score import Score, ScoreNote, ScorePart, write_midi
from cusep.spectral import SpectralConfig

TINY_CHANNELS = (8, 16, 32, 64)


def tiny_model(seed: int = 0, **overrides) -> tuple[ConditionedUNet, ModelConfig]:
    """An untrained 4-level network (label-multiply over the 13 classes unless overridden)."""
    config = ModelConfig(**{"channels": TINY_CHANNELS, **overrides})
    torch.manual_seed(seed)
    return ConditionedUNet(config).eval(), config


@pytest.fixture(scope="session")
def make_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_model_dir(name, **ModelConfig overrides)`` -> a saved float32 model dir.

    Directories are built once per session and name; callers must not modify them (copy first).
    """
    root = tmp_path_factory.mktemp("models")
    built: dict[str, Path] = {}

    def make(name: str = "tiny", **overrides) -> Path:
        if name not in built:
            model, config = tiny_model(**overrides)
            built[name] = save_model_dir(root / name, model, config, dtype=torch.float32)
        return built[name]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_model_dir: Callable[..., Path]) -> Path:
    """The default tiny model: label-multiply over all 13 instruments, paper front end."""
    return make_model_dir("tiny")


@pytest.fixture(scope="session")
def short_model_dir(make_model_dir: Callable[..., Path]) -> Path:
    """The tiny model with 16383-sample windows (64 frames): cheap, many windows per second."""
    return make_model_dir("short", spectral=SpectralConfig(segment=16383))


@pytest.fixture(scope="session")
def make_signal() -> Callable[..., np.ndarray]:
    """Factory: ``make_signal(rate, seconds, channels=1, seed=0, amp=0.3)`` -> float32
    (channels, samples): two harmonic tones (different per channel) plus a little noise."""

    def make(rate: int, seconds: float, channels: int = 1, seed: int = 0,
             amp: float = 0.3) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n = int(round(rate * seconds))
        t = np.arange(n) / rate
        out = np.empty((channels, n), np.float64)
        for c in range(channels):
            sig = np.zeros(n)
            for f0 in (220.0 * (1 + 0.25 * c), 330.0 * (1 + 0.1 * c)):
                for h in range(1, 6):
                    if h * f0 < rate / 2:
                        sig += np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi)) / h
            sig *= 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t) ** 2  # slow tremolo: not stationary
            sig += 0.05 * rng.standard_normal(n)
            out[c] = amp * sig / np.abs(sig).max()
        return out.astype(np.float32)

    return make


RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """``cli(*args)`` -> (exit code, stdout, stderr) of ``cusep *args``, in-process."""
    from cusep.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main([*map(str, args)])
        out = capsys.readouterr()
        code = info.value.code
        return (0 if code is None else code if isinstance(code, int) else 1), out.out, out.err

    return run


TIMBRES = {"vn": [1, 0.5, 0.3, 0.2], "vc": [1, 0.3, 0.6], "fl": [1, 0.1], "tpt": [1, 0.8, 0.7, 0.6]}


def _tone(code: str, n: int, rng: np.random.Generator, rate: int = 11025
          ) -> tuple[np.ndarray, list[ScoreNote]]:
    """A melody of random harmonic notes with the partials of TIMBRES[code]: (n,), and its
    notes (each at the MIDI pitch nearest its frequency)."""
    t = np.arange(n) / rate
    out, pos, notes = np.zeros(n), 0, []
    while pos < n:
        length = int(rate * rng.uniform(0.15, 0.4))
        f0 = rng.uniform(150, 700)
        note = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t[:length])
                   for k, a in enumerate(TIMBRES[code]))
        out[pos:pos + length] += note[: n - pos]
        notes.append(ScoreNote(pos / rate, min(pos + length, n) / rate,
                               int(round(69 + 12 * np.log2(f0 / 440)))))
        pos += length
    return (0.2 * out / np.abs(out).max()).astype(np.float32), notes


@pytest.fixture(scope="session")
def urmp_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small rendered-style pieces (2-3 synthetic instruments, 3 s, 11025 Hz) in the URMP
    layout, as ``cusep synth`` writes them (with their scores, ``Sco_*.mid``)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("urmp_data")
    rng = np.random.default_rng(0)
    codes = list(TIMBRES)
    for i in range(6):
        chosen = [codes[(i + j) % 4] for j in range(2 + i % 2)]
        name = f"{i + 1:04d}_work{i}_" + "_".join(chosen)
        folder = root / name
        folder.mkdir()
        stems, parts = [], []
        for code in chosen:
            stem, notes = _tone(code, 11025 * 3, rng)
            stems.append(stem)
            parts.append(ScorePart(code, None, code, tuple(notes)))
        write_midi(Score(folder / f"Sco_{name}.mid", tuple(parts)), folder / f"Sco_{name}.mid")
        for k, (code, stem) in enumerate(zip(chosen, stems, strict=True)):
            sf.write(folder / f"AuSep_{k + 1}_{code}_{i + 1:04d}_work{i}.wav", stem, 11025)
        sf.write(folder / f"AuMix_{name}.wav", sum(stems), 11025)
    return root
