"""What the video path costs on top of separating the audio track, measured in one run.

Usage: python benchmarks/bench_video.py [VIDEO BOXES] [--seconds 60] [--size 1280x720]

Without arguments a synthetic video is made (players side by side, each box flashing at its own
note onsets, with the mix as its AAC audio) at the given size and length. Prints the time of each
stage of ``cusep separate VIDEO --boxes`` path b (read audio, separate, motion energy, matching)
and the ratio of the whole video path to the audio-only separation of the same track.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from videos import onset_times, tone, write_video  # noqa: E402

from cusep.separate import Separator  # noqa: E402
from cusep.video import motion_energy  # noqa: E402
from cusep.video_separate import (  # noqa: E402
    InstrumentPlan,
    assign_players,
    open_video,
    separate_stems,
)


def make_video(folder: Path, seconds: float, width: int, height: int, players: int = 4
               ) -> tuple[Path, Path]:
    """A synthetic quartet video + boxes.json (boxes without instruments)."""
    onsets = [onset_times(seconds, k) for k in range(players)]
    audio = sum(tone(o, seconds, 110.0 * 1.5 ** k, k) for k, o in enumerate(onsets))
    cell = width // players
    frames = []
    for i in range(int(seconds * 25)):
        t = i / 25
        img = np.full((height, width, 3), 40, np.uint8)
        for k, times in enumerate(onsets):
            if int(np.searchsorted(times, t, side="right")) % 2:
                img[height // 4:3 * height // 4, k * cell + cell // 4:k * cell + cell // 2] = 220
        frames.append(img)
    video = write_video(folder / "bench.mp4", frames, audio=audio[None])
    boxes = folder / "boxes.json"
    boxes.write_text(json.dumps({"players": [{"box": [k * cell, 0, cell, height]}
                                             for k in range(players)]}))
    return video, boxes


def grey_speed(path: Path) -> tuple[float, float]:
    """Frames per second of motion_energy's luma reader and of swscale's grey conversion."""
    import av

    from cusep.video.motion import _small_grey

    rates = []
    for fast in (True, False):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            w, h = stream.codec_context.width, stream.codec_context.height
            k = max(1, -(-max(w, h) // 320))
            t0, n = time.perf_counter(), 0
            for frame in container.decode(stream):
                if fast:
                    _small_grey(frame, k, w // k, h // k)
                else:
                    frame.to_ndarray(format="gray", width=w // k, height=h // k)
                n += 1
            rates.append(n / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?")
    ap.add_argument("boxes", nargs="?")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--instruments", default="vn,va,vc,db")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.video:
            video_path, boxes = Path(args.video), Path(args.boxes)
        else:
            w, h = (int(v) for v in args.size.split("x"))
            video_path, boxes = make_video(Path(tmp), args.seconds, w, h)
        sep = Separator(None, device="cpu")
        t0 = time.perf_counter()
        video = open_video(video_path, boxes)
        t1 = time.perf_counter()
        codes = sep.check_instruments(args.instruments)[: len(video.players)]
        stems = separate_stems(sep, video, codes)
        t2 = time.perf_counter()
        plan = InstrumentPlan(codes, "motion", {}, ("motion",) * len(video.players))
        assign_players(video, plan, stems)  # motion energy + onset/loudness matching
        t3 = time.perf_counter()
        motion_energy(video.path, video.players)
        t4 = time.perf_counter()
        audio_only = t2 - t1
        duration = video.audio.shape[-1] / video.rate
        print(f"video {video.info.width}x{video.info.height}, {duration:.1f} s, "
              f"{len(video.players)} players, {len(codes)} instruments")
        print(f"  open (audio track + boxes)   {t1 - t0:6.2f} s")
        print(f"  separate the audio           {audio_only:6.2f} s "
              f"({duration / audio_only:.1f}x real time)")
        print(f"  assign players (motion+match) {t3 - t2:5.2f} s; motion energy alone "
              f"{t4 - t3:.2f} s ({video.info.frames / (t4 - t3):.0f} frames/s)")
        total = (t1 - t0) + audio_only + (t3 - t2)
        fast, slow = grey_speed(video.path)
        print(f"  grey frames: luma plane {fast:.0f} frames/s, swscale {slow:.0f} frames/s "
              f"-> {fast / slow:.1f}x")
        print(f"video path / audio-only separation: {total / audio_only:.2f}x")


if __name__ == "__main__":
    main()
