"""Peak memory of ``cusep separate`` against the input's length: it should be flat.

Writes mono 44.1 kHz inputs of each length (silence, as in the report that asked for this, or
the benchmark's harmonic mixture with ``--signal tones``), runs ``cusep separate`` on each in a
fresh child process and prints the child's peak resident memory (``ru_maxrss`` from
``os.wait4``) beside the shortest input's.

    python benchmarks/bench_memory.py [--minutes 1,10,60] [--signal silence|tones]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100
BLOCK = RATE * 60  # one minute per write


def write_input(path: Path, minutes: float, signal: str) -> None:
    """A mono 16-bit wav of ``minutes``, written a minute at a time (bounded memory here too)."""
    t = np.arange(BLOCK) / RATE
    tones = 0.1 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 147 * t * (1 + 0.01 * t)))
    left = int(minutes * 60 * RATE)
    with sf.SoundFile(str(path), "w", RATE, 1, "PCM_16") as f:
        while left > 0:
            n = min(left, BLOCK)
            f.write(tones[:n] if signal == "tones" else np.zeros(n))
            left -= n


def peak_rss(path: Path, out: Path, model: str | None) -> tuple[float, float]:
    """Run ``cusep separate`` on ``path`` in a child -> (peak RSS in MiB, wall seconds)."""
    cmd = [sys.executable, "-m", "cusep", "separate", str(path), "-i", "vn,vc", "-o", str(out)]
    if model:
        cmd += ["--model", model]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"cusep separate failed on {path.name} ({proc.returncode}): {err}")
    return usage.ru_maxrss / 1024, seconds  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="1,10,60", help="comma-separated input lengths")
    ap.add_argument("--signal", choices=("silence", "tones"), default="silence")
    ap.add_argument("--model", default=None, help="model name or folder (default: registry's)")
    args = ap.parse_args()
    lengths = [float(m) for m in args.minutes.split(",")]
    print(f"cusep separate -i vn,vc on mono {RATE} Hz {args.signal}; peak RSS per child process")
    print(f"{'minutes':>8} {'peak RSS MiB':>13} {'x shortest':>11} {'wall s':>8} "
          f"{'x real time':>12}")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in lengths:
            path = Path(tmp) / f"in_{minutes:g}min.wav"
            write_input(path, minutes, args.signal)
            rss, seconds = peak_rss(path, Path(tmp) / "out", args.model)
            path.unlink()
            first = first or rss
            print(f"{minutes:8g} {rss:13.0f} {rss / first:11.2f} {seconds:8.1f} "
                  f"{minutes * 60 / seconds:12.1f}", flush=True)


if __name__ == "__main__":
    main()
