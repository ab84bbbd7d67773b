"""A ready recipe for a lent GPU: training data packed under the transfer limit, trained there in
minutes, weights back.

Here (before the device run):

    python scripts/gpu_recipe.py pack ~/.cache/cusep/data/train-real ~/.cache/cusep/data/valid-real

packs the AuSep stems of the sets as Ogg Vorbis at the model rate (about 15 kbit/s: 400
source-minutes take about 46 MB) into ``.carry/data/<set>/<piece>/``: the ``valid-*`` sets whole,
then pieces of the ``train-*`` sets in a fixed shuffled order until ``--budget-mb`` (default:
the 64 MiB that travel, less the tracked files - the shipped models among them - and the wheels
in ``.whl``). Mixes are not packed: they are the sums of the stems. Then, on the device, one
command (``carry``: ``.carry`` and ``.whl``):

    bash scripts/gpu_train.sh MINUTES [cusep train --set ...]

installs the wheels (soundfile, cffi), runs ``unpack`` (Vorbis -> 16-bit wav stems and their
float sum as AuMix, URMP layout), trains ``cusep-label`` from ``$CUSEP_INIT`` for MINUTES on
CUDA with bf16 autocast, and exports the best step (by the validation set's SI-SDR) to
``$OUT/model`` (fp16 safetensors, about 10 MB) with the run's metrics.jsonl and config.json.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".carry" / "data"
LIMIT_MB = 64.0  # what travels to the device in one call


def _travelling_mb() -> float:
    """MB of what travels beside the pack: tracked files (the models among them) and wheels."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    sizes = [(ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file()]
    sizes += [p.stat().st_size for p in (ROOT / ".whl").glob("*.whl")]
    return sum(sizes) / 2**20


def pack(sets: list[Path], budget_mb: float | None) -> None:
    """Valid sets whole, then train pieces in a fixed shuffled order until the budget is met."""
    if PACK.exists():
        sys.exit(f"error: {PACK} exists; remove it first (rm -r {PACK})")
    if budget_mb is None:
        budget_mb = LIMIT_MB - 2.0 - _travelling_mb()
    bad = [s for s in sets if not s.name.startswith(("train-", "valid-"))]
    if bad:
        sys.exit(f"error: name the sets train-* or valid-* (got {bad[0].name})")
    valid = [p for s in sets if s.name.startswith("valid-") for p in sorted(s.glob("*/"))]
    train = [p for s in sets if s.name.startswith("train-") for p in sorted(s.glob("*/"))]
    train = [train[i] for i in np.random.default_rng(0).permutation(len(train))]
    total, packed, skipped = 0, 0, 0
    for piece in valid + train:
        stems = sorted(piece.glob("AuSep_*.wav"))
        if not stems:
            continue
        blobs = []
        for wav in stems:
            x, rate = sf.read(str(wav), dtype="float32")
            buf = io.BytesIO()
            sf.write(buf, x, rate, format="OGG", subtype="VORBIS", compression_level=1.0)
            blobs.append((wav.stem + ".ogg", buf.getvalue()))
        size = sum(len(b) for _, b in blobs)
        if total + size > budget_mb * 2**20:
            if piece in valid:
                sys.exit(f"error: the valid sets alone pass {budget_mb:.1f} MB; pack less")
            skipped += 1
            continue
        dest = PACK / piece.parent.name / piece.name
        dest.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs:
            (dest / name).write_bytes(blob)
        total += size
        packed += 1
    print(f"packed {packed} pieces ({skipped} train pieces left out by the {budget_mb:.1f} MB "
          f"budget) into {PACK}: {total / 2**20:.1f} MB")


def unpack(out: Path) -> None:
    pieces = 0
    for folder in sorted(PACK.glob("*/*")):
        dest = out / folder.parent.name / folder.name
        dest.mkdir(parents=True, exist_ok=True)
        stems = []
        for ogg in sorted(folder.glob("AuSep_*.ogg")):
            x, rate = sf.read(str(ogg), dtype="float32")
            sf.write(str(dest / (ogg.stem + ".wav")), x, rate, subtype="PCM_16")
            stems.append(x)
        n = max(len(s) for s in stems)
        mix = sum(np.pad(s, (0, n - len(s))) for s in stems)
        sf.write(str(dest / f"AuMix_{folder.name}.wav"), mix, rate, subtype="FLOAT")
        pieces += 1
    print(f"unpacked {pieces} pieces into {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack URMP-layout sets into .carry/data")
    p.add_argument("sets", nargs="+", type=Path)
    p.add_argument("--budget-mb", type=float, default=None,
                   help="default: 64 MiB less the tracked files, the wheels and 2 MB")
    u = sub.add_parser("unpack", help="unpack .carry/data into wav sets")
    u.add_argument("out", type=Path)
    args = ap.parse_args()
    if args.command == "pack":
        pack(args.sets, args.budget_mb)
    else:
        unpack(args.out)


if __name__ == "__main__":
    main()
