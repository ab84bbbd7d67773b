"""Video: players' boxes (boxes.json), frames and player crops, motion, overlays.

:mod:`.boxes` reads boxes.json; :mod:`.frames` decodes frames and cuts the players' crops;
:mod:`.motion` measures each player's motion; :mod:`.overlay` writes the labelled video.
"""

from .boxes import Player, load_boxes, parse_boxes
from .frames import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrameProvider,
    VideoInfo,
    crop_players,
    frame_provider,
    normalise,
    read_frames,
    resize_square,
    video_info,
)
from .motion import motion_energy
from .overlay import write_overlay

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrameProvider",
    "Player",
    "VideoInfo",
    "crop_players",
    "frame_provider",
    "load_boxes",
    "motion_energy",
    "normalise",
    "parse_boxes",
    "read_frames",
    "resize_square",
    "video_info",
    "write_overlay",
]
