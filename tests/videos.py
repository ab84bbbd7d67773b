"""Small synthetic videos for tests: players whose boxes move at their own notes' onsets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

FPS = 25
RATE = 11025
CELL = (96, 80)  # (height, width) of one player's cell


def write_video(path: Path, frames: Iterable[np.ndarray], fps: int = FPS,
                audio: np.ndarray | None = None, rate: int = RATE) -> Path:
    """Encode RGB frames (H, W, 3) uint8 as h264 (+ AAC audio (channels, samples) if given)."""
    import av

    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "18", "preset": "ultrafast"}
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=rate)
            astream.layout = "mono" if audio.shape[0] == 1 else "stereo"
        for img in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if astream is not None:
            block = 1024
            data = np.ascontiguousarray(audio, dtype=np.float32)
            for i in range(0, data.shape[-1], block):
                chunk = np.ascontiguousarray(data[:, i:i + block])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=astream.layout)
                frame.sample_rate = rate
                frame.pts = i
                for packet in astream.encode(frame):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return path


def tone(onsets: Sequence[float], seconds: float, freq: float, seed: int) -> np.ndarray:
    """Decaying harmonic notes starting at ``onsets`` (s), random pitches around ``freq``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    y = np.zeros_like(t)
    for start in onsets:
        f = freq * 2 ** (rng.integers(0, 7) / 12)
        local = t[t >= start] - start
        y[t >= start] += np.exp(-local / 0.15) * sum(
            np.sin(2 * np.pi * h * f * local) / h for h in (1, 2, 3, 4))
    return (0.15 * y).astype(np.float32)


def onset_times(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.25, 0.9, size=int(seconds * 4)))
    return t[t < seconds - 0.5]


def players_scene(onsets: Sequence[np.ndarray], seconds: float) -> list[np.ndarray]:
    """Frames of players side by side: a bright bar in each cell flips at the player's onsets."""
    h, w = CELL
    frames = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        img = np.full((h, w * len(onsets), 3), 30, np.uint8)
        for p, times in enumerate(onsets):
            side = int(np.searchsorted(times, t, side="right")) % 2
            x0 = p * w + (10 if side == 0 else w - 30)
            img[20:h - 20, x0:x0 + 20] = (200, 180, 60)
        frames.append(img)
    return frames


def boxes_json(players: int, codes: Sequence[str | None] = ()) -> dict:
    h, w = CELL
    out = []
    for p in range(players):
        entry: dict = {"box": [p * w + 2, 2, w - 4, h - 4]}
        if p < len(codes) and codes[p]:
            entry["instrument"] = codes[p]
        out.append(entry)
    return {"units": "pixels", "players": out}


def tiny_visual(conditioning: str = "final-multiply", frames: int = 1, temporal: str = "max",
                freeze: bool = False, seed: int = 0):
    """An untrained visual ConditionedUNet: ResNet-18 without weights, 32-px crops, 3 levels."""
    import torch

    from cusep.model import ConditionedUNet, ModelConfig
    from cusep.spectral import SpectralConfig
    from cusep.visual import VisualConfig

    visual = VisualConfig(backbone="resnet18", weights="none", frames=frames,
                          temporal=temporal, freeze=freeze, feature_dim=16, crop_size=32)
    torch.manual_seed(seed)
    return ConditionedUNet(ModelConfig(conditioning=conditioning, context_dim=16,
                                       channels=(4, 8, 16), visual=visual,
                                       spectral=SpectralConfig(segment=4095)))
