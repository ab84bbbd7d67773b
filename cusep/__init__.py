"""cusep: conditioned source separation for chamber music.

>>> import cusep
>>> stems = cusep.separate(audio, 44100, instruments="vn,va,vc")   # {code: (channels, samples)}
>>> stems = cusep.separate(audio, 44100, instruments="auto")       # detected instruments
>>> cusep.Detector().detect(audio, 44100).confidences()            # {code: probability}
>>> stems, plan = cusep.separate_video("quartet.mp4", "boxes.json")  # {"player1_vn": ...}
"""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import load_detector, load_model
from .detect import DetectionResult, Detector
from .instruments import CODES, INSTRUMENTS, parse_instruments
from .separate import Separator, SeparatorConfig, separate
from .video_separate import PlayerPlan, separate_video

__all__ = [
    "CODES",
    "DetectionResult",
    "Detector",
    "INSTRUMENTS",
    "PlayerPlan",
    "Separator",
    "SeparatorConfig",
    "__version__",
    "load_detector",
    "load_model",
    "parse_instruments",
    "separate",
    "separate_video",
]
