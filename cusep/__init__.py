"""cusep: conditioned source separation for chamber music.

>>> import cusep
>>> stems = cusep.separate(audio, 44100, instruments="vn,va,vc")   # {code: (channels, samples)}
"""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import load_model
from .instruments import CODES, INSTRUMENTS, parse_instruments
from .separate import Separator, SeparatorConfig, separate

__all__ = [
    "CODES",
    "INSTRUMENTS",
    "Separator",
    "SeparatorConfig",
    "__version__",
    "load_model",
    "parse_instruments",
    "separate",
]
