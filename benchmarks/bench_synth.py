"""Render speed of ``cusep synth`` per SoundFont, as a multiple of real time.

Renders the same few pieces (same works, players and humanisation) with each font, one
process, side by side, and prints mix-seconds and stem-seconds rendered per wall second.
Parsing is excluded (works are parsed and cached before the clock starts).

    python benchmarks/bench_synth.py [--pieces 4] [--fonts fluidr3,timgm6mb] [--jobs 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from cusep.data.synth import SynthConfig, plan_pieces, render_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=4)
    ap.add_argument("--fonts", default="fluidr3,timgm6mb")
    ap.add_argument("--excerpt-seconds", type=float, default=20.0)
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    base = SynthConfig(split="valid", sources=("bach", "mozart"), min_players=3, max_players=4,
                       minutes_per_instrument=0, max_pieces=args.pieces,
                       excerpt_seconds=args.excerpt_seconds, jobs=args.jobs, seed=11)
    plan_pieces(base)  # parse and cache the works outside the timing
    print(f"{args.pieces} pieces of ~{args.excerpt_seconds:g} s, jobs={args.jobs}")
    print(f"{'font':<14}{'wall s':>8}{'mix x RT':>10}{'stems x RT':>12}")
    for font in args.fonts.split(","):
        config = replace(base, fonts=(font,))
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            manifest = render_dataset(Path(tmp) / "set", config, progress=False)
            wall = time.perf_counter() - start
        mix = sum(p["duration_s"] for p in manifest["pieces"])
        stems = sum(p["duration_s"] * len(p["players"]) for p in manifest["pieces"])
        print(f"{font:<14}{wall:>8.1f}{mix / wall:>10.1f}{stems / wall:>12.1f}")


if __name__ == "__main__":
    main()
