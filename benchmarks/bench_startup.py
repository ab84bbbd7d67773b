"""Start-up time of the light commands beside ``python -c pass``, measured side by side.

Usage: python benchmarks/bench_startup.py [--runs 5]

Each command runs in a fresh interpreter from this checkout (``python -m cusep``, the working
directory first on sys.path); the median of the runs is printed with its ratio to an empty
interpreter, and ``import torch`` for scale (what the light commands no longer import); last,
a whole ``cusep separate`` of a 1 s stereo 44.1 kHz file with the default model, and how much
longer than ``import torch`` it takes (the fixed cost of a separation).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "cusep --help": ["-m", "cusep", "--help"],
    "cusep --version": ["-m", "cusep", "--version"],
    "cusep models list": ["-m", "cusep", "models", "list"],
    "cusep separate --help": ["-m", "cusep", "separate", "--help"],
    "cusep separate x.wav --format ogg (usage error)": ["-m", "cusep", "separate", "x.wav",
                                                        "--format", "ogg"],
    "python -c 'import torch'": ["-c", "import torch"],
}


def seconds(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    base = seconds(COMMANDS["python -c pass"], args.runs)
    for name, argv in COMMANDS.items():
        t = base if name == "python -c pass" else seconds(argv, args.runs)
        print(f"{name:50s} {t:6.3f} s  {t / base:5.1f}x python -c pass")
    torch_s = seconds(COMMANDS["python -c 'import torch'"], args.runs)
    with tempfile.TemporaryDirectory() as tmp:
        t = np.arange(44100) / 44100
        audio = np.stack([0.2 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 220 * t)], 1)
        sf.write(Path(tmp) / "one.wav", audio, 44100)
        sep = seconds(["-m", "cusep", "separate", str(Path(tmp) / "one.wav"), "-i", "vn,vc",
                       "-o", str(Path(tmp) / "out"), "--force"], args.runs)
    print(f"{'cusep separate (1 s stereo 44.1 kHz, vn,vc)':50s} {sep:6.3f} s  "
          f"{sep - torch_s:+.3f} s beside import torch ({torch_s:.3f} s)")


if __name__ == "__main__":
    main()
