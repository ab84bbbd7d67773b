"""cusep: conditioned source separation for chamber music.

>>> import cusep
>>> stems = cusep.separate(audio, 44100, instruments="vn,va,vc")   # {code: (channels, samples)}
>>> stems = cusep.separate(audio, 44100, instruments="auto")       # detected instruments
>>> cusep.Detector().detect(audio, 44100).confidences()            # {code: probability}
>>> stems, plan = cusep.separate_video("quartet.mp4", "boxes.json")  # {"player1_vn": ...}
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .version import __version__

# Public name -> the submodule that defines it. They are imported on first use (PEP 562), so
# `import cusep` (and `cusep --help`) does not pull in torch.
_EXPORTS = {
    "CODES": "instruments",
    "DetectionResult": "detect",
    "Detector": "detect",
    "INSTRUMENTS": "instruments",
    "PlayerPlan": "video_separate",
    "Separator": "separate",
    "SeparatorConfig": "separate",
    "load_detector": "checkpoint",
    "load_model": "checkpoint",
    "parse_instruments": "instruments",
    "separate": "separate",
    "separate_video": "video_separate",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cusep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # next time a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """``cusep.separate`` is the function even after the submodule of that name is imported
    (importing ``cusep.separate`` binds the submodule to the package's attribute)."""

    @property
    def separate(self) -> Any:
        from .separate import separate

        return separate

    @separate.setter
    def separate(self, value: Any) -> None:
        if not isinstance(value, types.ModuleType):
            raise AttributeError("cusep.separate is the function cusep.separate.separate")


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from .checkpoint import load_detector, load_model
    from .detect import DetectionResult, Detector
    from .instruments import CODES, INSTRUMENTS, parse_instruments
    from .separate import Separator, SeparatorConfig, separate
    from .video_separate import PlayerPlan, separate_video
