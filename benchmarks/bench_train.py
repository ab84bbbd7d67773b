"""Training speed: samples/s of ``Trainer.train_step`` on a preset, cusep's against the step as
it was, measured alternately in this one process on the same synthetic stems. cusep's step takes
the STFT of the used source rows only (``make_targets``) and, for a label-multiply model, puts
only the labelled rows through the activations and the l2 loss; the step before computed the
targets (``every_row_targets``) and the loss (``all_rows_mse``) of all 13 class rows.

The stems: a few pieces of harmonic-note melodies in the URMP layout (as ``cusep synth`` writes
them), 11025 Hz. Prints samples/s of each variant, the ratio, and make_targets alone.

    python benchmarks/bench_train.py [--preset cusep-label] [--batch-size 32] [--steps 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from cusep import train as T
from cusep.config import build_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from references import all_rows_mse, every_row_targets  # noqa: E402

RATE = 11025
CODES = ("vn", "va", "vc", "fl", "cl", "tpt")


def write_pieces(root: Path, pieces: int, seconds: float, seed: int = 0) -> None:
    """URMP-layout pieces of 3-5 melodic stems each: <root>/<id>_<name>_<codes>/AuSep_*.wav."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    for i in range(pieces):
        chosen = [CODES[(i + j) % len(CODES)] for j in range(3 + i % 3)]
        name = f"{i + 1:02d}_bench{i}_" + "_".join(chosen)
        folder = root / name
        folder.mkdir()
        stems = []
        for k, code in enumerate(chosen):
            f0 = np.repeat(rng.uniform(110, 880, int(seconds * 3) + 1), RATE // 3)[:n]
            phase = 2 * np.pi * np.cumsum(f0) / RATE
            stem = sum(np.sin(h * phase) / h ** (1 + 0.2 * k) for h in range(1, 9))
            stem *= 0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t + k) ** 2
            stems.append((0.2 * stem / np.abs(stem).max()).astype(np.float32))
            sf.write(folder / f"AuSep_{k + 1}_{code}_{i + 1:02d}_bench{i}.wav", stems[-1], RATE)
        sf.write(folder / f"AuMix_{name}.wav", sum(stems), RATE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cusep-label")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        write_pieces(data, pieces=8, seconds=20.0)
        extra = [f"data.train=['{data}']", "optim.valid_items=4"]
        if args.batch_size:
            extra.append(f"optim.batch_size={args.batch_size}")
        cfg = build_config(args.preset, extra)
        trainer = T.Trainer(cfg, Path(tmp) / "run", torch.device("cpu"), log=lambda s: None)
        trainer.train_step()  # warm-up (oneDNN kernels, allocator)
        if cfg.model.score_input or cfg.optim.loss != "l2":
            sys.exit("the references take no score channels and only the l2 loss; use a label "
                     "preset")

        def before(batch, spec, score=None):  # the reference, under make_targets' signature
            return every_row_targets(batch, spec)

        variants = {"used rows (cusep)": (T.make_targets, T.separation_loss),
                    "every row (before)": (before, all_rows_mse)}
        steps: dict[str, float] = {name: float("inf") for name in variants}
        for _ in range(args.rounds):
            for name, (targets, loss) in variants.items():
                T.make_targets, T.separation_loss = targets, loss
                start = time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step()
                steps[name] = min(steps[name], (time.perf_counter() - start) / args.steps)
        T.make_targets, T.separation_loss = variants["used rows (cusep)"]
        batch = trainer.train_sampler.draw(cfg.optim.batch_size, trainer.generator)
        alone = {}
        for name, (fn, _) in variants.items():
            fn(batch, cfg.model.spectral)
            start = time.perf_counter()
            for _ in range(3):
                fn(batch, cfg.model.spectral)
            alone[name] = (time.perf_counter() - start) / 3
    size = cfg.optim.batch_size
    print(f"preset {args.preset}, batch {size}, {args.threads} threads, CPU; best of "
          f"{args.rounds} rounds of {args.steps} steps")
    for name, t in steps.items():
        print(f"{name:20s} {t:7.2f} s/step  {size / t:6.2f} samples/s  "
              f"make_targets {alone[name] * 1000:7.1f} ms")
    before, after = steps["every row (before)"], steps["used rows (cusep)"]
    print(f"training samples/s: {before / after:.2f}x; make_targets: "
          f"{alone['every row (before)'] / alone['used rows (cusep)']:.2f}x")


if __name__ == "__main__":
    main()
