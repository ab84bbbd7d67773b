"""Score an instrument detector on a URMP-layout test set (the numbers of its model card).

usage: python scripts/eval_detect.py DATA [DATA ...] [--detector DIR] [--separator MODEL]
                                      [--thresholds 0.1,0.2,...] [--out JSON]
                                      [--class-thresholds JSON] [--reliability PNG]

Per piece, the mixture is the sum of its sources at the model rate (11025 Hz). Recording level:
mAP over the 13 classes, per-instrument F1 at the detector's stored threshold, misses and false
detections, and how many of them are same-family confusions (a missed instrument and a false one
of the same family in one piece). Window level (one segment per window, the piece's instruments
as labels): mAP. With --separator: the SI-SDR improvement of the true sources separated with the
detected list minus that with the true list, averaged over every source of the set (a missed
source counts as the mixture: 0 dB improvement). Each distinct instrument list of a piece is
separated once, and a piece detected exactly at every threshold not at all; the true-list and
auto means over the pieces with a detection error are reported too. --thresholds also scores
the auto path at other thresholds, to choose the separation threshold on a validation set.
Several DATA folders are pooled. --class-thresholds writes the threshold of each class that
maximises its F1 on these recordings (the input of `cusep export --class-thresholds`); the
detector's own thresholds (one per class if it stores them) decide everything else.
Calibration: the expected calibration error of the recording and window probabilities (10 bins,
every class pooled) and the recording reliability table are reported; --reliability draws both
curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from cusep.detect import Detector
from cusep.evaluate import load_sources, select_pieces
from cusep.instruments import BY_CODE, label_vector
from cusep.metrics import (
    best_class_thresholds,
    best_threshold,
    detection_metrics,
    reliability,
    si_sdr,
)
from cusep.report import reliability_plot
from cusep.separate import Separator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="+")
    ap.add_argument("--detector", default=None)
    ap.add_argument("--separator", default=None)
    ap.add_argument("--thresholds", default="",
                    help="comma-separated thresholds at which to score the auto path too")
    ap.add_argument("--out", default=None)
    ap.add_argument("--reliability", default=None,
                    help="write a reliability plot of the probabilities here (PNG)")
    ap.add_argument("--class-thresholds", default=None,
                    help="write the per-class F1-best thresholds here (JSON)")
    args = ap.parse_args()
    det = Detector(args.detector, device="cpu")
    sep = Separator(args.separator, device="cpu") if args.separator else None
    rate = det.model.config.spectral.sample_rate
    pieces = [p for root in args.data for p in select_pieces(root)[0]]
    cut = np.array(det.thresholds or (det.threshold,) * len(det.classes))
    probs, targets, win_probs, win_targets = [], [], [], []
    pairs: Counter[tuple[str, str]] = Counter()  # (missed, falsely detected) in one piece
    misses = false = same_miss = same_false = 0
    gains_true, gains_auto = [], []  # sources of the pieces with a detection error
    sweep = sorted({float(t) for t in args.thresholds.split(",") if t.strip()})
    sweep_diff = dict.fromkeys(sweep, 0.0)  # threshold -> summed auto - true SI-SDRi
    start = time.perf_counter()
    for piece in pieces:
        sources, codes, _ = load_sources(piece, rate)
        mix = sources.sum(0)
        result = det.detect(mix, rate)
        truth = np.array(label_vector(codes, det.classes))
        probs.append(result.probabilities)
        targets.append(truth)
        win_probs.append(result.window_probabilities)
        win_targets.append(np.tile(truth, (len(result.times), 1)))
        found = set(result.detected)
        missed = [c for c in codes if c not in found]
        extra = [c for c in found if c not in codes]
        misses += len(missed)
        false += len(extra)
        family = {BY_CODE[c].family for c in codes}
        same_false += sum(BY_CODE[c].family in family for c in extra)
        same_miss += sum(any(BY_CODE[e].family == BY_CODE[m].family for e in extra)
                         for m in missed)
        pairs.update((m, e) for m in missed for e in extra)
        if sep is not None:
            diffs = auto_minus_true(sep, mix, rate, sources, codes, result.probabilities,
                                    det.classes, [cut, *sweep])
            for i, t in enumerate(sweep, start=1):
                sweep_diff[t] += diffs[i][1].sum() - diffs[i][0].sum()
            if found != set(codes):
                gains_true += diffs[0][0].tolist()
                gains_auto += diffs[0][1].tolist()
                print(f"{piece.name}: true {sorted(codes)} detected {sorted(found)}, "
                      f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    probs, targets = np.stack(probs), np.stack(targets)
    rec = detection_metrics(probs, targets, cut, det.classes)
    win = detection_metrics(np.concatenate(win_probs), np.concatenate(win_targets),
                            cut, det.classes)
    exact = int(sum((p > cut).astype(int).tolist() == t.astype(int).tolist()
                    for p, t in zip(probs, targets, strict=True)))
    report = {
        "pieces": len(pieces),
        "threshold": det.threshold,
        "thresholds": dict(zip(det.classes, cut.tolist(), strict=True)),
        "recording_map": rec["map"],
        "recording_macro_f1": rec["f1"],
        "recording_exact_sets": exact,
        "recording_best_threshold": best_threshold(probs, targets),
        "per_instrument_f1": rec["per_class_f1"],
        "per_instrument_ap": rec["ap"],
        "window_map": win["map"],
        "window_macro_f1": win["f1"],
        "sources": int(targets.sum()),
        "missed": misses,
        "false_detections": false,
        "false_with_same_family_present": same_false,
        "missed_with_same_family_false": same_miss,
        "confusions_same_family": {f"{m}->{e}": n for (m, e), n in pairs.most_common()
                                   if BY_CODE[m].family == BY_CODE[e].family},
        "confusions_other_family": {f"{m}->{e}": n for (m, e), n in pairs.most_common(12)
                                    if BY_CODE[m].family != BY_CODE[e].family},
        "seconds": round(time.perf_counter() - start, 1),
    }
    if sep is not None:
        diff = np.array(gains_auto) - np.array(gains_true)
        report["separator"] = sep.name
        report["si_sdri_auto_minus_true_all_sources"] = float(diff.sum() / targets.sum())
        report["error_pieces_sources"] = len(diff)
        if len(diff):
            report["error_pieces_si_sdri_true_list"] = float(np.mean(gains_true))
            report["error_pieces_si_sdri_auto"] = float(np.mean(gains_auto))
        if sweep:
            report["threshold_sweep"] = {
                f"{t:.2f}": {"si_sdri_auto_minus_true": float(sweep_diff[t] / targets.sum()),
                             "macro_f1": detection_metrics(probs, targets, t, det.classes)["f1"]}
                for t in sweep}
    rec_curve = reliability(probs, targets)
    win_curve = reliability(np.concatenate(win_probs), np.concatenate(win_targets))
    report["recording_ece"], report["window_ece"] = rec_curve["ece"], win_curve["ece"]
    report["recording_reliability"] = {
        f"{lo:.1f}-{hi:.1f}": [None if np.isnan(o) else round(float(o), 3), int(n)]
        for lo, hi, o, n in zip(rec_curve["edges"][:-1], rec_curve["edges"][1:],
                                rec_curve["observed"], rec_curve["count"], strict=True)}
    if args.reliability:
        reliability_plot([("recordings", rec_curve), ("windows", win_curve)], args.reliability,
                         f"{det.name} on {', '.join(Path(d).name for d in args.data)}")
    if args.class_thresholds:
        chosen = best_class_thresholds(probs, targets, det.threshold)
        report["class_thresholds"] = dict(zip(det.classes, chosen.tolist(), strict=True))
        report["class_thresholds_macro_f1"] = detection_metrics(probs, targets, chosen,
                                                                det.classes)["f1"]
        with open(args.class_thresholds, "w") as fh:
            json.dump(report["class_thresholds"], fh, indent=2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


def auto_minus_true(sep: Separator, mix: np.ndarray, rate: int, sources: np.ndarray,
                    codes: list[str], probabilities: np.ndarray, classes: tuple[str, ...],
                    thresholds: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per threshold (one for all classes, or one per class (K,)): SI-SDR improvements
    (sources,) with the true list and with the detected one (a missed source: 0 dB). Every
    distinct list is separated once."""
    truth = frozenset(codes)
    found = [frozenset(c for c, p, cut in zip(classes, probabilities,
                                              np.broadcast_to(t, probabilities.shape),
                                              strict=True) if p > cut)
             for t in thresholds]
    if all(f == truth for f in found):  # the same stems either way: nothing to separate
        zero = np.zeros(len(codes))
        return [(zero, zero) for _ in thresholds]
    base = si_sdr(np.broadcast_to(mix, sources.shape), sources)
    gains: dict[frozenset, np.ndarray] = {}

    def gain(found: frozenset) -> np.ndarray:
        if found not in gains:
            est = sep.separate(mix, rate, [c for c in classes if c in found]) if found else {}
            gains[found] = np.array([float(si_sdr(est[c], sources[k]) - base[k]) if c in est
                                     else 0.0 for k, c in enumerate(codes)])
        return gains[found]

    true = gain(truth)
    return [(true, gain(f)) for f in found]


if __name__ == "__main__":
    main()
