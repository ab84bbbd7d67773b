"""Stem writing: encoded straight to the final format vs through a float spill file.

``AudioWriter`` encodes blocks straight into the output format; only a signal that exceeds
full scale (with ``clip="rescale"``) goes through a float32 spill file that is re-read and
quantised at the end, which is how every stem was written before. Both paths run here on the
same blocks (the spill forced by one loud sample in the first block), side by side.

    python benchmarks/bench_write.py [--seconds 180] [--stems 4] [--format wav16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cusep.audio import AudioWriter

RATE, BLOCK = 44100, 65536


def write(folder: Path, blocks: list[np.ndarray], stems: int, fmt: str, loud: bool) -> float:
    """Write ``stems`` stems of ``blocks`` -> seconds taken."""
    start = time.perf_counter()
    writers = [AudioWriter(folder / f"s{k}.{'flac' if 'flac' in fmt else 'wav'}", RATE,
                           blocks[0].shape[0], fmt) for k in range(stems)]
    for i, block in enumerate(blocks):
        for w in writers:
            if loud and i == 0:
                block = block.copy()
                block[0, 0] = 1.5  # one sample over full scale: the spill path
            w.write(block)
    peak = max(w.peak for w in writers)
    for w in writers:
        w.finish(peak=peak)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--stems", type=int, default=4)
    ap.add_argument("--format", default="wav16")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = int(args.seconds * RATE)
    signal = (rng.standard_normal((2, n)) * 0.1).astype(np.float32)
    blocks = [signal[:, i:i + BLOCK] for i in range(0, n, BLOCK)]
    times: dict[str, list[float]] = {"direct": [], "float spill": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            for name, loud in (("direct", False), ("float spill", True)):
                times[name].append(write(Path(tmp), blocks, args.stems, args.format, loud))
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.stems} stems x {args.seconds:g} s of 44.1 kHz stereo, {args.format}, "
          f"best of {args.repeats}")
    for name, t in best.items():
        print(f"  {name:12s} {t:6.2f} s  ({args.seconds * args.stems / t:6.0f}x real time "
              "per stem)")
    print(f"  spill / direct: {best['float spill'] / best['direct']:.2f}x")


if __name__ == "__main__":
    main()
