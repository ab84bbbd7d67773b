"""Benchmark: cusep's torch EM Wiener filter vs ``norbert.wiener`` on the same input.

Default input: 60 s of synthetic music at 11025 Hz (about 2585 frames x 512 bins), 4 sources,
1 channel, float32, 2 EM iterations, 2 threads. Prints best-of-N wall times, the speed-up and
the largest difference between the two outputs.

    python benchmarks/bench_wiener.py [--seconds 60] [--sources 4] [--channels 1] ...
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--sample-rate", type=int, default=11025)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--device", default="cpu", help="device of the torch run (norbert: CPU)")
    ap.add_argument("--no-norbert", action="store_true", help="time the torch filter only")
    ap.add_argument("--tune-malloc", action="store_true",
                    help="keep glibc from unmapping large buffers (as the Separator does), "
                    "for both methods: removes most page-fault time")
    return ap.parse_args()


ARGS = _args()
if ARGS.tune_malloc:  # same settings as cusep.runtime.tune_cpu_allocator
    import ctypes

    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallopt(-4, 0)  # M_MMAP_MAX
    _libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, str(ARGS.threads))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cusep.spectral import stft  # noqa: E402
from cusep.wiener import wiener  # noqa: E402


def _sources(n: int, channels: int, samples: int, sr: int, gen: torch.Generator) -> torch.Tensor:
    """Synthetic sources: notes of harmonic tones with vibrato and a little noise.

    -> (n, channels, samples) float64.
    """
    t = torch.arange(samples, dtype=torch.float64) / sr
    out = torch.zeros(n, channels, samples, dtype=torch.float64)
    note = int(0.5 * sr)
    for j in range(n):
        for start in range(0, samples, note):
            f0 = 110.0 * 2 ** (torch.randint(0, 36, (1,), generator=gen).item() / 12)
            seg = t[start:start + note]
            phase = 2 * torch.pi * f0 * seg + 0.3 * torch.sin(2 * torch.pi * 5 * seg)
            tone = sum(torch.sin(h * phase) / h for h in range(1, 8))
            env = torch.exp(-3 * (seg - seg[0]))
            out[j, :, start:start + note] = tone * env
        out[j] *= torch.rand(channels, 1, generator=gen, dtype=torch.float64) + 0.5
    return out + 0.01 * torch.randn(out.shape, generator=gen, dtype=torch.float64)


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    a = ARGS
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    samples = int(a.seconds * a.sample_rate)
    src = _sources(a.sources, a.channels, samples, a.sample_rate, gen)
    S = stft(src)  # (J, C, B, F) complex128
    X = S.sum(0)
    # estimates: true magnitudes blurred by a random gain, as a network would give
    V = S.abs() * (0.5 + torch.rand(S.shape, generator=gen, dtype=torch.float64))
    cdt = torch.complex64 if a.dtype == "float32" else torch.complex128
    rdt = torch.float32 if a.dtype == "float32" else torch.float64
    x = X.permute(2, 1, 0).contiguous().to(cdt)  # (F, B, C)
    v = V.permute(3, 2, 1, 0).contiguous().to(rdt)  # (F, B, C, J)
    F, B, C, J = v.shape
    print(f"input: {F} frames x {B} bins x {C} ch x {J} sources, {a.dtype}, "
          f"{a.iterations} EM iterations, {a.threads} threads, torch on {a.device}"
          + (", malloc tuned" if a.tune_malloc else ""))

    dev = torch.device(a.device)
    xd, vd = x.to(dev), v.to(dev)

    def run_torch() -> torch.Tensor:
        y = wiener(vd, xd, iterations=a.iterations)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return y

    run_torch()  # warm-up
    t_torch, y_torch = _best(run_torch, a.repeats)
    rows = [("cusep.wiener (torch)", t_torch)]

    if not a.no_norbert:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import norbert
        xn, vn = x.numpy(), v.numpy()
        t_nb, y_nb = _best(lambda: norbert.wiener(vn, xn.copy(), a.iterations), a.repeats)
        rows.append(("norbert.wiener", t_nb))

    print(f"{'method':<24}{'best of ' + str(a.repeats) + ' (s)':>16}{'vs torch':>10}")
    for name, t in rows:
        print(f"{name:<24}{t:>16.4f}{t / t_torch:>9.1f}x")
    if not a.no_norbert:
        yt = y_torch.cpu().numpy()
        diff = np.abs(yt - y_nb).max()
        print(f"speed-up: {t_nb / t_torch:.1f}x; max |torch - norbert| = {diff:.3g} "
              f"(max |y| = {np.abs(y_nb).max():.3g})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
