"""Benchmark: cusep's iSTFT (``cusep.spectral.istft``) against ``torch.istft`` on the same spectra.

Default input: one batch of the separator at 44.1 kHz (4 windows x 4 stems x 2 channels, the
input grid's n_fft 4088 and hop 1024, 257 frames in the frames-innermost layout the filter
stage leaves). Runs the two interleaved, best of N each, and prints the ratio, the largest
difference, and what the 4088-point inverse FFT itself costs against a 4096-point one.

    python benchmarks/bench_istft.py [--n-fft 4088] [--hop 1024] [--signals 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time

import torch

from cusep.spectral import istft, stft


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n-fft", type=int, default=4088)
    ap.add_argument("--hop", type=int, default=1024)
    ap.add_argument("--signals", type=int, default=32, help="windows x stems x channels")
    ap.add_argument("--samples", type=int, default=262140)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    spec = stft(torch.randn(a.signals, a.samples, generator=gen), a.n_fft, a.hop)
    spec = (spec * torch.rand(spec.shape, generator=gen)).contiguous()  # masked, frames last
    window = torch.hann_window(a.n_fft, periodic=True)

    def ours() -> torch.Tensor:
        return istft(spec, a.samples, a.n_fft, a.hop)

    def theirs() -> torch.Tensor:
        return torch.istft(spec, a.n_fft, a.hop, a.n_fft, window, center=True, length=a.samples)

    times = {"cusep istft": [], "torch.istft": []}
    for _ in range(a.repeats):  # interleaved: both see the same machine load
        times["cusep istft"].append(_best(ours, 1))
        times["torch.istft"].append(_best(theirs, 1))
    t_ours, t_theirs = min(times["cusep istft"]), min(times["torch.istft"])
    diff = float((ours() - theirs()).abs().max())
    print(f"input: {a.signals} signals x {spec.shape[-2]} bins x {spec.shape[-1]} frames, "
          f"n_fft {a.n_fft}, hop {a.hop}, {a.threads} threads")
    print(f"cusep istft {t_ours:.4f} s, torch.istft {t_theirs:.4f} s (best of {a.repeats}): "
          f"{t_theirs / t_ours:.2f}x; max |difference| {diff:.2g}")
    frames = torch.randn(a.signals * spec.shape[-1], a.n_fft // 2 + 1, dtype=torch.complex64,
                         generator=gen)
    fast = torch.randn(frames.shape[0], 2049, dtype=torch.complex64, generator=gen)
    t_n = _best(lambda: torch.fft.irfft(frames, n=a.n_fft), a.repeats)
    t_4096 = _best(lambda: torch.fft.irfft(fast, n=4096), a.repeats)
    print(f"inverse FFT alone: {a.n_fft} points {t_n:.4f} s, 4096 points {t_4096:.4f} s "
          f"({t_n / t_4096:.1f}x)")


if __name__ == "__main__":
    main()
