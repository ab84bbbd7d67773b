"""Choose the Separator's defaults by measurement: SI-SDR improvement over the mixture for every
combination of settings, on real recordings first (urmp-dev, when ``../shared/data`` is there)
and on rendered sets the model never trained on.

usage: python scripts/select_defaults.py [--model M] [--data DIR ...] [--iterations 0,1,2]
                                         [--mix-floor 0,0.1,0.2] [--overlap 0.25] [--out DIR]

Each (set, setting) is one ``cusep eval`` run (full protocol, whole pieces, true instrument
lists), cached under ``--out`` so a rerun only computes what is new. Prints, per setting, the
mean SI-SDRi over the sources of every set, the worst instrument's mean on each set (the
"no instrument below the mixture" check), and the mean of the per-set means, which is the
number to choose by. ``--rest`` scores partial lists instead (each instrument named alone with a
rest stem).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

from cusep.evaluate import EvalConfig, evaluate, select_pieces

URMP_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "urmp-dev"


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _mean_gain(records, method: str) -> tuple[float, dict[str, float]]:
    rows = [r for r in records if r["method"] == method and r["si_sdri"] is not None]
    by_inst: dict[str, list[float]] = {}
    for r in rows:
        by_inst.setdefault(r["instrument"], []).append(r["si_sdri"])
    return (statistics.fmean(r["si_sdri"] for r in rows),
            {k: statistics.fmean(v) for k, v in by_inst.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "-m", default=None)
    ap.add_argument("--data", action="append", default=[],
                    help="URMP-layout set (repeatable); urmp-dev is added when present")
    ap.add_argument("--iterations", default="0,2")
    ap.add_argument("--mix-floor", default="0")
    ap.add_argument("--overlap", default="0.25")
    ap.add_argument("--rest", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="eval/defaults")
    args = ap.parse_args()

    sets = [Path(d) for d in args.data]
    if URMP_DEV.is_dir():
        sets.insert(0, URMP_DEV)
    else:
        print(f"note: {URMP_DEV} is absent; real recordings are not scored", file=sys.stderr)
    if not sets:
        sys.exit("error: no data: pass --data DIR (urmp-dev is absent)")
    grid = list(itertools.product([int(i) for i in _floats(args.iterations)],
                                  _floats(args.mix_floor), _floats(args.overlap)))
    print(f"{'W':>2} {'floor':>5} {'overlap':>7} | "
          + " | ".join(f"{s.name[:18]:>18} (worst)" for s in sets) + " | mean of sets")
    for iterations, floor, overlap in grid:
        cells, means = [], []
        for data in sets:
            pieces, _ = select_pieces(data)
            config = EvalConfig(protocol="full", references=(), wiener_iterations=iterations,
                                mix_floor=floor, overlap=overlap, rest=args.rest, bss=False)
            tag = f"W{iterations}-f{floor:g}-o{overlap:g}{'-rest' if args.rest else ''}"
            result = evaluate(pieces, args.model, Path(args.out) / data.name / tag, config,
                              data=data, device=args.device, jobs=args.jobs)
            method = result.settings["model"]["name"]
            mean, by_inst = _mean_gain(result.records, method)
            worst = min(by_inst, key=by_inst.get)
            cells.append(f"{mean:+6.2f} ({worst} {by_inst[worst]:+6.2f})")
            means.append(mean)
        print(f"{iterations:>2} {floor:>5g} {overlap:>7g} | "
              + " | ".join(f"{c:>26}" for c in cells) + f" | {statistics.fmean(means):+.2f}",
              flush=True)


if __name__ == "__main__":
    main()
