"""The values and defaults that the command line shows and checks before anything heavy loads.

``cusep --help`` and argument errors must not import torch, so the accepted values and defaults
of options live here as plain constants. ``tests/test_cli_startup.py`` checks that they equal the
library's (``cusep.audio.FORMAT_EXTENSIONS``, ``SeparatorConfig``, ``REFERENCE_METHODS``, ...).
"""

from __future__ import annotations

import re
from typing import Literal

import typer

from ..instruments import INSTRUMENTS

#: ``--format``: every output format ``cusep.audio`` writes (``wav`` is ``wav16``).
FORMATS = ("wav16", "wav24", "float32", "flac", "flac24", "mp3", "wav")
#: ``--bitrate`` of ``--format mp3`` (``cusep.audio.MP3_BITRATES``).
MP3_BITRATES = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
Format = Literal[FORMATS]  # type: ignore[valid-type]

ClipMode = Literal["rescale", "clamp"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Protocol = Literal["paper", "full"]
Weights = Literal["best", "last"]
Layout = Literal["urmp", "solos"]

#: Defaults of ``SeparatorConfig`` / ``cusep.evaluate`` shown in ``--help``.
WIENER_ITERATIONS = 0
MIX_FLOOR = 0.1
OVERLAP = 0.25
BATCH_SIZE = 4
REFERENCE_METHODS = ("irm", "mix")

DEVICES = "auto|cpu|cuda|cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_option(help_text: str = "Device: auto (CUDA if present), cpu, cuda or cuda:N.") \
        -> typer.models.OptionInfo:
    """``--device/-d``: checked here (the syntax), then by ``resolve_device`` (that it exists)."""
    return typer.Option("auto", "--device", "-d", metavar=f"<{DEVICES}>", parser=parse_device,
                        help=help_text)


def parse_device(value: str) -> str:
    name = value.strip().lower()
    if not _DEVICE.fullmatch(name):
        raise typer.BadParameter(f"unknown device '{value}'; use auto, cpu, cuda or cuda:N")
    return name


def instruments_epilog() -> str:
    """The instrument codes, for the epilog of commands that take ``--instruments``."""
    codes = ", ".join(f"{i.code} ({i.name})" for i in INSTRUMENTS)
    return f"Instrument codes: {codes}. Names work too, in any case."
