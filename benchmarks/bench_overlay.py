"""What ``--overlay`` costs beside decoding the video once, measured side by side.

Usage: python benchmarks/bench_overlay.py [VIDEO BOXES] [--seconds 32] [--size 480x200]

Without arguments a synthetic video is made (players side by side with AAC audio). Prints the
time to decode every frame once (the floor of any overlay) and the time of
``cusep.video.write_overlay`` (decode, draw the boxes and labels, encode, copy the audio), and
their ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # this checkout's cusep, not an install
from bench_video import make_video  # noqa: E402

from cusep.video import load_boxes, video_info, write_overlay  # noqa: E402


def decode_once(path: Path) -> tuple[float, int]:
    """Seconds to decode every video frame (threaded, as the overlay decodes), and the count."""
    import av

    t0, n = time.perf_counter(), 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            n += 1
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?")
    ap.add_argument("boxes", nargs="?")
    ap.add_argument("--seconds", type=float, default=32.0)
    ap.add_argument("--size", default="480x200")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.video:
            video, boxes = Path(args.video), Path(args.boxes)
        else:
            w, h = (int(v) for v in args.size.split("x"))
            video, boxes = make_video(Path(tmp), args.seconds, w, h)
        info = video_info(video)
        players = load_boxes(boxes, info.width, info.height)
        labels = {p.index: f"{p.name} (vn)" for p in players}
        decode, frames = decode_once(video)
        t0 = time.perf_counter()
        write_overlay(video, Path(tmp) / "overlay.mp4", players, labels)
        overlay = time.perf_counter() - t0
        print(f"video {info.width}x{info.height}, {frames} frames, {len(players)} players")
        print(f"  decode once      {decode:6.2f} s ({frames / decode:.0f} frames/s)")
        print(f"  write_overlay    {overlay:6.2f} s ({frames / overlay:.0f} frames/s)")
        print(f"  added by drawing + encoding {overlay - decode:6.2f} s")
        print(f"overlay / decode once: {overlay / decode:.2f}x")


if __name__ == "__main__":
    main()
