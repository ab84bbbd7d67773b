"""Seeded synthetic references and estimates for metric tests and benchmarks/bench_metrics.py.

Well-conditioned on purpose (resonant noise, vibrato tones, a noise floor): band-limited
references make BSS-eval's Gram matrix singular, and then even mir_eval's numbers depend on
rounding.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

SR = 11025


def make_references(n: int, samples: int, seed: int) -> np.ndarray:
    """Alternating resonant filtered noise and vibrato harmonic tones, plus a noise floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    out = []
    for i in range(n):
        if i % 2 == 0:
            x = rng.standard_normal(samples)
            for _ in range(2):
                f, r = rng.uniform(200, 3000), rng.uniform(0.95, 0.99)
                w = 2 * np.pi * f / SR
                x = scipy.signal.lfilter([1 - r], [1, -2 * r * np.cos(w), r * r], x)
        else:
            f0 = rng.uniform(150, 500) * (1 + 0.006 * np.sin(2 * np.pi * 5.5 * t))
            phase = 2 * np.pi * np.cumsum(f0) / SR
            amps = rng.uniform(0.2, 1.0, 8) / np.arange(1, 9)
            x = sum(a * np.sin(h * phase + rng.uniform(0, 6.3)) for h, a in enumerate(amps, 1))
            x = x * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
        out.append(x / np.std(x) + 0.03 * rng.standard_normal(samples))
    return np.array(out)


def make_estimates(references: np.ndarray, seed: int) -> np.ndarray:
    """references + interference from the others + a filtered (64-tap) distortion + noise."""
    rng = np.random.default_rng(seed + 1000)
    n, samples = references.shape
    leak = rng.uniform(0.05, 0.3, (n, n))
    np.fill_diagonal(leak, 1.0)
    taps = rng.standard_normal((n, 64)) * np.exp(-np.arange(64) / 10) * 0.3
    distortion = np.array([np.convolve(references[j], taps[j])[:samples] for j in range(n)])
    return leak @ references + distortion + 0.1 * rng.standard_normal((n, samples))
