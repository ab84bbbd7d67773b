"""Benchmark: ``cusep.audio.resample`` against ``torchaudio.functional.resample`` (same kernel).

Default input: 3 minutes of mono noise at each input rate, resampled to the model rate 11025 Hz
with cusep's Kaiser parameters (also with the kernel built once, as the streaming resampler
of `cusep separate` keeps it). Runs them interleaved, best of N each, and prints the ratios
and the largest difference (torchaudio in float64 as the reference, since its float32
kernel is itself off by up to 3e-5 for ratios such as 48 kHz -> 11025 Hz).

    python benchmarks/bench_resample.py [--seconds 180] [--rates 44100,48000,22050] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torchaudio.functional as AF

from cusep.audio import _BETA, _LOWPASS_WIDTH, _ROLLOFF, SincKernel, resample


def _seconds(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _torchaudio(x: torch.Tensor, orig: int, target: int) -> torch.Tensor:
    return AF.resample(x, orig, target, lowpass_filter_width=_LOWPASS_WIDTH, rolloff=_ROLLOFF,
                       resampling_method="sinc_interp_kaiser", beta=_BETA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--rates", default="44100,48000,22050")
    ap.add_argument("--target", type=int, default=11025)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{a.seconds:g} s of mono float32 noise -> {a.target} Hz, best of {a.repeats}")
    for rate in (int(r) for r in a.rates.split(",")):
        x = torch.randn(1, int(a.seconds * rate), generator=torch.Generator().manual_seed(rate))
        kernel = SincKernel.build(rate, a.target)  # as the streaming resampler keeps it
        ours = built = theirs = float("inf")
        for _ in range(a.repeats):  # interleaved: all see the same machine load
            ours = min(ours, _seconds(resample, x, rate, a.target))
            built = min(built, _seconds(resample, x, rate, a.target, kernel))
            theirs = min(theirs, _seconds(_torchaudio, x, rate, a.target))
        y = resample(x, rate, a.target)
        ref = _torchaudio(x.double(), rate, a.target)[..., :y.shape[-1]]
        diff = float((y.double() - ref).abs().max())
        print(f"{rate} Hz: cusep {ours:.3f} s ({built:.3f} s with the kernel built once), "
              f"torchaudio {theirs:.3f} s ({theirs / ours:.1f}x, {theirs / built:.1f}x); "
              f"max |difference| to torchaudio in float64 {diff:.2g}")


if __name__ == "__main__":
    main()
