"""cusep's BSS-eval against mir_eval's bss_eval_sources on the same signals.

Default: 4 sources, 60 s at 11025 Hz, no permutation search on either side. Prints both times,
their ratio and the largest difference in dB. Run: python benchmarks/bench_metrics.py [--help]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.signal

from cusep.metrics import bss_eval_sources

SR = 11025


def make_signals(n: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """References (resonant filtered noise / vibrato harmonic tones + noise floor) and estimates
    (reference + leakage of the others + 64-tap filtered distortion + noise). (n, samples) each."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    refs = []
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
        refs.append(x / np.std(x) + 0.03 * rng.standard_normal(samples))
    refs = np.array(refs)
    leak = rng.uniform(0.05, 0.3, (n, n))
    np.fill_diagonal(leak, 1.0)
    taps = rng.standard_normal((n, 64)) * np.exp(-np.arange(64) / 10) * 0.3
    distortion = np.array([np.convolve(refs[j], taps[j])[:samples] for j in range(n)])
    return refs, leak @ refs + distortion + 0.1 * rng.standard_normal((n, samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3, help="cusep runs (best is kept)")
    args = parser.parse_args()

    import mir_eval.separation

    refs, ests = make_signals(args.sources, int(args.seconds * SR), seed=0)
    print(f"{args.sources} sources, {args.seconds:g} s at {SR} Hz, float64, no permutation")

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = bss_eval_sources(refs, ests, compute_permutation=False)
        times.append(time.perf_counter() - start)
    ours_time = min(times)

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(
            refs, ests, compute_permutation=False
        )
    ref_time = time.perf_counter() - start

    diff = max(np.abs(ours.sdr - sdr).max(), np.abs(ours.sir - sir).max(),
               np.abs(ours.sar - sar).max())
    print(f"SDR {np.round(sdr, 2)}  SIR {np.round(sir, 2)}  SAR {np.round(sar, 2)}")
    print(f"mir_eval.bss_eval_sources : {ref_time:8.3f} s")
    print(f"cusep bss_eval_sources    : {ours_time:8.3f} s (best of {args.repeats})")
    print(f"speed-up                  : {ref_time / ours_time:8.1f}x")
    print(f"max |difference|          : {diff:.2e} dB")


if __name__ == "__main__":
    main()
