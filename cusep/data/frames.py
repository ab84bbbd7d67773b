"""Video frames for training visually conditioned models, cached once at load time.

Decoding video at every step is far too slow, so each source's player crops are read once, on a
time grid (every ``step`` seconds, ``DataConfig.frame_step``), and kept in CPU memory as uint8
(T, P, 3, S, S): 3 * S * S bytes per player per grid point, i.e. 150 KB at S = 224, so one hour
of one player at a 0.4 s grid costs about 1.35 GB. A sampler asks for the crops nearest to the
times it needs (:meth:`FrameTrack.at`). For a frozen backbone the crops are replaced at load time
by their backbone features (:func:`encode_track`; float16 (T, P, Db), 4 KB per crop for ResNet-50),
so the backbone never runs during training.

Two layouts:

- Solos: ``<root>/frames/<Instrument>/<id>/NNNN.jpg`` beside ``<root>/wav11k/<Instrument>/<id>.wav``
  (1-based numbering, 25 fps); the whole frame is the player.
- URMP: ``Vid_<piece>.mp4`` and ``boxes.json`` in the piece folder; boxes.json lists the players
  in AuSep order (player k's box crops the player of ``AuSep_<k>_...``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CusepError
from ..video import resize_square
from .urmp import BOXES_FILE, Piece

SOLOS_FPS = 25.0
_CHUNK = 16  # full video frames decoded at once (bounded memory for large videos)


@dataclass(frozen=True)
class FrameTrack:
    """Cached player crops of one source on the CPU: uint8 (T, P, 3, S, S), or their backbone
    features float16 (T, P, Db); grid point t shows time ``t * step`` seconds (a source of
    several players has P > 1)."""

    crops: torch.Tensor
    step: float

    @property
    def players(self) -> int:
        return self.crops.shape[1]

    def at(self, times: Sequence[float]) -> torch.Tensor:
        """Crops nearest to ``times`` (seconds) -> (P, len(times), 3, S, S) (or (P, F, Db))."""
        last = self.crops.shape[0] - 1
        idx = torch.tensor([min(max(round(t / self.step), 0), last) for t in times])
        return self.crops[idx].transpose(0, 1)


@torch.no_grad()
def encode_track(track: FrameTrack, encoder: torch.nn.Module, device: torch.device,
                 batch: int = 64) -> FrameTrack:
    """Crops -> backbone features (float16, CPU) with a frozen ``VisualEncoder``."""
    from ..video import normalise

    t, p = track.crops.shape[:2]
    flat = track.crops.reshape(t * p, *track.crops.shape[2:])
    feats = [encoder.features(normalise(flat[i:i + batch].to(device))[:, None, None])
             .reshape(-1, encoder.config.backbone_dim).to("cpu", torch.float16)
             for i in range(0, t * p, batch)]
    return FrameTrack(torch.cat(feats).reshape(t, p, -1), track.step)


def _grid(duration: float, step: float) -> list[float]:
    return [i * step for i in range(max(1, math.floor(duration / step) + 1))]


# --------------------------------------------------------------------------------------- Solos


def solos_frames_dir(audio: str | Path) -> Path:
    """``<root>/wav11k/<Instrument>/<id>.wav`` -> ``<root>/frames/<Instrument>/<id>``."""
    audio = Path(audio)
    base = audio.parent.parent  # the wav11k folder (or the root when there is none)
    root = base.parent if base.name == "wav11k" else base
    return root / "frames" / audio.parent.name / audio.stem


def solos_frame_files(audio: str | Path) -> list[Path]:
    """The sorted frame files of a Solos recording (empty when it has none)."""
    folder = solos_frames_dir(audio)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))


def read_image(path: Path) -> torch.Tensor:
    """An image file (JPEG, PNG) -> uint8 (3, H, W) RGB, decoded with PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.FFmpegError, StopIteration) as exc:
        raise CusepError(f"cannot decode frame {path} ({exc})") from None
    return torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()


def read_solos_frames(audio: str | Path, duration: float, step: float = 0.4,
                      size: int = 224) -> FrameTrack:
    """The frames of a Solos recording every ``step`` seconds over ``duration`` -> one player."""
    files = solos_frame_files(audio)
    if not files:
        raise CusepError(f"no frames for {audio} in {solos_frames_dir(audio)}")
    picks = [min(int(round(t * SOLOS_FPS)), len(files) - 1) for t in _grid(duration, step)]
    decoded: dict[int, torch.Tensor] = {}
    out = []
    for i in picks:
        if i not in decoded:
            image = resize_square(read_image(files[i])[None], size)[0]
            decoded[i] = image.round().clamp(0, 255).to(torch.uint8)
        out.append(decoded[i])
    return FrameTrack(torch.stack(out).unsqueeze(1), step)


# ---------------------------------------------------------------------------------------- URMP


def piece_has_video(piece: Piece) -> bool:
    """True when the piece folder holds a video and a boxes.json."""
    return piece.video is not None and piece.boxes is not None


def read_piece_frames(piece: Piece, duration: float, step: float = 0.4,
                      size: int = 224) -> dict[str, FrameTrack]:
    """Player crops of a URMP-layout piece every ``step`` seconds -> {instrument code: track},
    the players of one instrument together (in player order), as its audio sources are summed.
    """
    from ..video import crop_players, load_boxes, read_frames, video_info

    if not piece_has_video(piece):
        raise CusepError(f"{piece.folder} has no Vid_....mp4 and {BOXES_FILE}")
    info = video_info(piece.video)
    players = {p.index: p for p in load_boxes(piece.boxes, info.width, info.height)}
    wanted = [t.player for t in piece.tracks]
    if sorted(players) != wanted:
        raise CusepError(f"{piece.folder / BOXES_FILE} lists {len(players)} players but the piece "
                         f"has {len(wanted)} AuSep tracks; give one box per player, in order")
    ordered = [players[k] for k in wanted]
    times = _grid(min(duration, info.duration) if info.duration > 0 else duration, step)
    chunks = []
    for i in range(0, len(times), _CHUNK):
        frames = read_frames(piece.video, times[i:i + _CHUNK])
        chunks.append(crop_players(frames, ordered, size, normalised=False))  # (N, P, 3, S, S)
    crops = torch.cat(chunks)
    return {code: FrameTrack(crops[:, [j for j, t in enumerate(piece.tracks)
                                       if t.instrument == code]].contiguous(), step)
            for code in piece.instruments}
