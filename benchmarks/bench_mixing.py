"""Time MixtureSampler.draw on a synthetic in-memory bank (URMP-sized pieces plus solos).

Usage: python benchmarks/bench_mixing.py [--device cuda] [--batch 32]
Prints ms per batch for the ensemble and mix-and-separate samplers and checks the batch
invariants (targets sum to the mix, present flags match non-zero rows) on that device.
"""

from __future__ import annotations

import argparse
import time

import torch

from cusep.data import MixingConfig, MixtureSampler, StemBank, make_generator
from cusep.instruments import CODES


def synthetic_bank(pieces: int, minutes: float, solos_per_class: int, rate: int = 11025):
    gen = torch.Generator().manual_seed(0)
    n = int(minutes * 60 * rate)
    out = []
    for p in range(pieces):
        k = 2 + p % 4
        codes = tuple(CODES[(p + j * 3) % len(CODES)] for j in range(k))
        codes = tuple(dict.fromkeys(codes))
        out.append((codes, 0.1 * torch.randn(len(codes), n, generator=gen)))
    solos = {
        c: [0.1 * torch.randn(n, generator=gen) for _ in range(solos_per_class)] for c in CODES
    }
    return StemBank(out, solos, rate)


def bench(sampler: MixtureSampler, batch: int, device: str, repeats: int) -> float:
    gen = make_generator(0, device=device)
    b = sampler.draw(batch, gen)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        b = sampler.draw(batch, gen)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / repeats * 1e3
    err = float((b.sources.sum(1) - b.mix).abs().max())
    ok = torch.equal(b.sources.abs().amax(-1) > 0, b.present.bool())
    assert b.mix.device.type == torch.device(device).type
    print(f"    sum error {err:.2e}, present flags match rows: {ok}")
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--pieces", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=3.0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    bank = synthetic_bank(args.pieces, args.minutes, 3).to(args.device)
    print(f"bank: {len(bank)} stems on {args.device} built in {time.perf_counter() - t0:.1f} s")
    for ratio in (1.0, 0.0):
        for norm in ("rms", "paper"):
            cfg = MixingConfig(ensemble_ratio=ratio, normalise=norm, noise_std=0.0)
            t0 = time.perf_counter()
            sampler = MixtureSampler(bank, cfg)
            setup = time.perf_counter() - t0
            ms = bench(sampler, args.batch, args.device, args.repeats)
            print(
                f"ensemble_ratio={ratio} normalise={norm}: {ms:.1f} ms / batch of {args.batch} "
                f"x 65535 (sampler setup {setup:.2f} s)"
            )


if __name__ == "__main__":
    main()
