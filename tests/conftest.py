"""Shared fixtures: tiny model directories (untrained, fixed seed) and synthetic test signals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from cusep.checkpoint import save_model_dir
from cusep.model import ConditionedUNet, ModelConfig
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
