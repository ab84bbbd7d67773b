"""Score the video path (one stem per player) on rendered videos with ground truth.

usage: python scripts/eval_video.py DATA [--model M] [--detector D] [--out JSON] [--limit N]

DATA is a URMP-layout folder written by ``cusep synth --video`` (``Vid_*.mp4`` and
``boxes.json`` per piece; player k's box belongs to ``AuSep_k_*``). For every piece:

- ``boxes``: the boxes name their instruments (path a): each player gets its instrument's stem;
- ``motion-given``: the instrument names are removed from the boxes and the true instrument list
  is given (``--instruments``): players are matched to stems by motion (path b);
- ``motion-auto``: no names at all: the instruments are detected in the audio (at most one
  per box, the most probable), then matched.

Assignment accuracy = share of players whose stem is their own instrument's. SI-SDR of each
player's stem against the player's instrument source (players of one instrument summed), mono
at 11025 Hz, after aligning the video's decoded audio track with AuMix (AAC adds a delay); the
improvement is against the aligned mixture.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cusep.audio import resample, to_mono
from cusep.detect import Detector
from cusep.errors import CusepError
from cusep.evaluate import load_sources, select_pieces
from cusep.metrics import si_sdr
from cusep.separate import Separator
from cusep.video import Player
from cusep.video_separate import (
    InstrumentPlan,
    VideoInput,
    assign_players,
    open_video,
    plan_instruments,
    separate_stems,
)

RATE = 11025


def lag_of(x: np.ndarray, ref: np.ndarray, max_lag: int) -> int:
    """The shift d (samples) that best aligns x[d:] with ref (FFT cross-correlation)."""
    n = 1 << int(np.ceil(np.log2(len(x) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(ref, n)), n)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    return int(lags[np.argmax(corr[lags])])


def aligned(stem: np.ndarray, rate: int, lag: int, length: int) -> np.ndarray:
    """A (channels, samples) stem at ``rate`` -> mono at RATE, shifted by ``lag``, ``length``."""
    y = resample(to_mono(stem), rate, RATE)
    y = y[lag:] if lag >= 0 else np.pad(y, (-lag, 0))
    return np.pad(y, (0, max(0, length - len(y))))[:length]


def score(video: VideoInput, codes: tuple[str, ...], stems: np.ndarray, truth: list[str],
          sources: np.ndarray, true_codes: tuple[str, ...], lag: int) -> dict:
    plan = assign_players(
        video, InstrumentPlan(codes, "motion", {}, ("motion",) * len(truth)), stems)
    got = [plan.code_of(i) for i in range(len(truth))]
    n = sources.shape[-1]
    sdr = [float(si_sdr(aligned(stems[plan.stem[i]], video.rate, lag, n),
                        sources[true_codes.index(c)])) for i, c in enumerate(truth)]
    return {"assigned": got, "correct": [g == t for g, t in zip(got, truth, strict=True)],
            "si_sdr": sdr}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--model", default=None)
    ap.add_argument("--detector", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    sep = Separator(args.model, device="cpu")
    det = Detector(args.detector, device="cpu")
    pieces, _ = select_pieces(args.data)
    pieces = [p for p in pieces if p.video is not None and p.boxes is not None]
    if args.limit:
        pieces = pieces[:args.limit]
    if not pieces:
        sys.exit(f"no piece with Vid_*.mp4 and boxes.json in {args.data}; render with --video")
    records = []
    start = time.perf_counter()
    for piece in pieces:
        truth = [b["instrument"] for b in json.loads(piece.boxes.read_text())["players"]]
        video = open_video(piece.video, piece.boxes)
        video = VideoInput(video.path, video.info,
                           tuple(_unnamed(p) for p in video.players), video.audio, video.rate)
        sources, true_codes, _ = load_sources(piece, RATE)
        mix = sources.sum(0)
        track = resample(to_mono(video.audio), video.rate, RATE)
        lag = lag_of(track[:RATE * 20], mix[:RATE * 20], RATE // 2)
        stems = separate_stems(sep, video, true_codes)
        rec = {"piece": piece.name, "players": truth, "lag_samples": lag,
               "mix_si_sdr": [float(si_sdr(aligned(video.audio, video.rate, lag, len(mix)),
                                           sources[true_codes.index(c)])) for c in truth]}
        rec["boxes"] = {"si_sdr": [
            float(si_sdr(aligned(stems[true_codes.index(c)], video.rate, lag, len(mix)),
                         sources[true_codes.index(c)])) for c in truth]}
        rec["motion-given"] = score(video, true_codes, stems, truth, sources, true_codes, lag)
        try:  # as `cusep separate VIDEO --boxes` does: detect, at most one per box
            auto_codes = plan_instruments(video, sep, None, det).codes
        except CusepError:  # nothing detected
            auto_codes = ()
        detected = auto_codes
        rec["detected"] = list(detected)
        if not detected:
            rec["motion-auto"] = None
        else:
            auto_stems = (stems if auto_codes == true_codes
                          else separate_stems(sep, video, auto_codes))
            rec["motion-auto"] = score(video, auto_codes, auto_stems, truth, sources,
                                       true_codes, lag)
        records.append(rec)
        print(f"{piece.name}: given {sum(rec['motion-given']['correct'])}/{len(truth)}, "
              f"auto {sum(rec['motion-auto']['correct']) if rec['motion-auto'] else 0}"
              f"/{len(truth)} (detected {', '.join(detected) or 'nothing'})", flush=True)
    summary = summarise(records)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "pieces": records}, indent=1))


def _unnamed(player: Player) -> Player:
    return replace(player, code=None)


def summarise(records: list[dict]) -> dict:
    mix = np.concatenate([r["mix_si_sdr"] for r in records])
    out = {"pieces": len(records), "players": int(len(mix)), "mix_si_sdr": float(mix.mean())}
    for key in ("boxes", "motion-given", "motion-auto"):
        sdr, correct, whole = [], [], []
        for r in records:
            res = r[key]
            if res is None:  # nothing detected: every player keeps the mixture
                sdr += r["mix_si_sdr"]
                correct += [False] * len(r["players"])
                whole.append(False)
                continue
            sdr += res["si_sdr"]
            if "correct" in res:
                correct += res["correct"]
                whole.append(all(res["correct"]))
        entry = {"si_sdr": float(np.mean(sdr)), "si_sdri": float(np.mean(sdr) - mix.mean())}
        if correct:
            entry["assignment_accuracy"] = float(np.mean(correct))
            entry["pieces_all_correct"] = int(sum(whole))
        out[key] = entry
    return out


if __name__ == "__main__":
    main()
