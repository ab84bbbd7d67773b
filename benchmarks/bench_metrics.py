"""cusep's BSS-eval against mir_eval's bss_eval_sources on the same signals.

Default: 4 sources, 60 s at 11025 Hz, no permutation search on either side. Prints both times,
their ratio and the largest difference in dB. Run: python benchmarks/bench_metrics.py [--help]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from cusep.metrics import bss_eval_sources

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from signals import SR, make_estimates, make_references  # noqa: E402


def make_signals(n: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """References and estimates (n, samples) from the metric tests' generator."""
    refs = make_references(n, samples, seed)
    return refs, make_estimates(refs, seed)


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
