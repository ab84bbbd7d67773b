"""Score an instrument detector on a URMP-layout test set (the numbers of its model card).

usage: python scripts/eval_detect.py DATA [DATA ...] [--detector DIR] [--separator MODEL]
                                      [--thresholds 0.1,0.2,...] [--out JSON]
                                      [--class-thresholds JSON] [--reliability PNG]
                                      [--resolve SHARE:LINE,...]

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
--resolve (with --separator) also scores the auto path resolved by separation (``resolve``
below: an experiment, not adopted) at each ``min_share:same_line[:threshold[:rounds]]``
setting given: the SI-SDR improvement, misses and false detections of the resolved lists.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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
from cusep.spectral import stft


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
    ap.add_argument("--resolve", default="",
                    help="comma-separated min_share:same_line[:threshold[:rounds]] settings of "
                    "the resolved auto path")
    args = ap.parse_args()
    settings = [resolve_setting(item) for item in args.resolve.split(",") if item.strip()]
    resolved = {cfg: {"diff": 0.0, "missed": 0, "false": 0, "dropped": Counter(),
                       "added": Counter()}
                for cfg in settings}
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
            diffs, pair, stems_of = auto_minus_true(sep, mix, rate, sources, codes,
                                                    result.probabilities, det.classes,
                                                    [cut, *sweep])
            for cfg, acc in resolved.items():
                kept = resolve_piece(stems_of, mix, result, cfg)
                true, auto = pair(frozenset(kept))
                acc["diff"] += auto.sum() - true.sum()
                acc["missed"] += sum(c not in kept for c in codes)
                acc["false"] += sum(c not in codes for c in kept)
                acc["dropped"].update(("right" if c not in codes else "wrong")
                                      for c in found - set(kept))
                acc["added"].update(("right" if c in codes else "wrong")
                                    for c in set(kept) - found)
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
        if resolved:
            report["resolved"] = {
                f"{cfg.min_share}:{cfg.same_line}:{cfg.threshold}:{cfg.rounds}": {
                    "si_sdri_auto_minus_true": float(acc["diff"] / targets.sum()),
                    "missed": acc["missed"], "false_detections": acc["false"],
                    "dropped_false": acc["dropped"]["right"],
                    "dropped_true": acc["dropped"]["wrong"],
                    "added_true": acc["added"]["right"], "added_false": acc["added"]["wrong"]}
                for cfg, acc in resolved.items()}
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
                    thresholds: list):
    """Per threshold (one for all classes, or one per class (K,)): SI-SDR improvements
    (sources,) with the true list and with the detected one (a missed source: 0 dB; both 0
    where the lists agree), and the functions that give them, and the stems, for any list.
    Every distinct list is separated once."""
    truth = frozenset(codes)
    found = [frozenset(c for c, p, cut in zip(classes, probabilities,
                                              np.broadcast_to(t, probabilities.shape),
                                              strict=True) if p > cut)
             for t in thresholds]
    base = si_sdr(np.broadcast_to(mix, sources.shape), sources)
    stems: dict[frozenset, dict[str, np.ndarray]] = {}
    gains: dict[frozenset, np.ndarray] = {}

    def stems_of(found: frozenset) -> dict[str, np.ndarray]:
        if found not in stems:
            stems[found] = (sep.separate(mix, rate, [c for c in classes if c in found])
                            if found else {})
        return stems[found]

    def gain(found: frozenset) -> np.ndarray:
        if found not in gains:
            est = stems_of(found)
            gains[found] = np.array([float(si_sdr(est[c], sources[k]) - base[k]) if c in est
                                     else 0.0 for k, c in enumerate(codes)])
        return gains[found]

    def pair(found: frozenset) -> tuple[np.ndarray, np.ndarray]:
        if found == truth:
            zero = np.zeros(len(codes))
            return zero, zero
        return gain(truth), gain(found)

    return [pair(f) for f in found], pair, stems_of


# ---- the auto path resolved by separation (issue 16, item 3; measured, not adopted)


@dataclass(frozen=True)
class ResolveConfig:
    """``min_share``: a stem with less than this share of the mixture's energy is dropped;
    ``same_line``: two same-family stems whose magnitude spectrograms' cosine similarity
    exceeds this carry one line, and the less probable is dropped (above 1: never);
    ``threshold``: the candidates are the instruments above this probability (None: above the
    detector's thresholds); ``rounds``: separations at most, each with the list the last
    one left, until nothing is dropped."""

    min_share: float = 0.02
    same_line: float = 0.9
    threshold: float | None = None
    rounds: int = 1


@dataclass(frozen=True)
class Evidence:
    """What a separation with the detected list shows: ``codes`` (K,), each stem's energy over
    the mixture's ``shares`` (K,), and the cosine ``similarity`` (K, K) of the stems' mono
    magnitude spectrograms."""

    codes: tuple[str, ...]
    shares: np.ndarray
    similarity: np.ndarray


def evidence(stems: Mapping[str, np.ndarray], mix: np.ndarray, n_fft: int = 1022,
             hop: int = 256) -> Evidence:
    """Stems {code: (channels, samples) or (samples,)} and the mixture of the same shape ->
    :class:`Evidence`."""
    codes = tuple(stems)
    audio = np.stack([np.asarray(stems[c], np.float32) for c in codes])
    mix = np.asarray(mix, np.float32)
    energy = float(np.square(mix, dtype=np.float64).sum()) + 1e-12
    shares = np.square(audio, dtype=np.float64).reshape(len(codes), -1).sum(1) / energy
    mono = torch.from_numpy(audio.reshape(len(codes), -1, audio.shape[-1]).mean(1))
    mag = stft(mono, n_fft, hop).abs().reshape(len(codes), -1).double()
    unit = mag / (torch.linalg.vector_norm(mag, dim=1, keepdim=True) + 1e-12)
    return Evidence(codes, shares, (unit @ unit.T).numpy())


def resolve(detected: Sequence[str], probabilities: Mapping[str, float], ev: Evidence,
            config: ResolveConfig) -> tuple[list[str], dict[str, str]]:
    """The detected list -> (the kept codes in their order, {dropped code: why}). The most
    probable detection is always kept."""
    index = {c: i for i, c in enumerate(ev.codes)}
    order = sorted(detected, key=lambda c: -probabilities[c])
    dropped: dict[str, str] = {}
    for code in order[1:]:  # the most probable stays
        share = ev.shares[index[code]]
        if share < config.min_share:
            dropped[code] = f"its stem holds {100 * share:.1f} % of the mixture's energy"
    kept = [c for c in order if c not in dropped]
    for i, code in enumerate(kept):
        if code in dropped:
            continue
        for other in kept[i + 1:]:  # less probable than code
            same = BY_CODE[other].family == BY_CODE[code].family
            sim = ev.similarity[index[code], index[other]]
            if other not in dropped and same and sim > config.same_line:
                dropped[other] = f"its stem carries the line of {code} (similarity {sim:.2f})"
    return [c for c in detected if c not in dropped], dropped


def resolve_setting(text: str) -> ResolveConfig:
    """``min_share:same_line[:threshold[:rounds]]`` (threshold ``-``: the detector's)."""
    share, line, *rest = text.split(":")
    threshold = None if not rest or rest[0] == "-" else float(rest[0])
    return ResolveConfig(float(share), float(line), threshold, *(int(r) for r in rest[1:]))


def resolve_piece(stems_of, mix: np.ndarray, result, cfg: ResolveConfig) -> list[str]:
    """The detected list resolved by separations with it (:func:`resolve`)."""
    probs = result.confidences()
    kept = (list(result.detected) if cfg.threshold is None
            else [c for c, p in probs.items() if p > cfg.threshold])
    for _ in range(cfg.rounds):
        if len(kept) < 2:
            break
        ev = evidence(stems_of(frozenset(kept)), mix)
        kept, dropped = resolve(kept, probs, ev, cfg)
        if not dropped:
            break
    return kept


if __name__ == "__main__":
    main()
