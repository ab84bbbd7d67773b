"""Dataset readers (URMP layout, Solos layout) and training-mixture samplers."""

from .mixing import Batch, MixingConfig, MixtureSampler, StemBank, load_mono, make_generator
from .solos import scan_solos, split_solos
from .urmp import (
    URMP_SINGLE_INSTRUMENT,
    Piece,
    Track,
    exclude_single_instrument,
    parse_piece_name,
    scan_urmp,
    select_split,
)

__all__ = [
    "URMP_SINGLE_INSTRUMENT",
    "Batch",
    "MixingConfig",
    "MixtureSampler",
    "Piece",
    "StemBank",
    "Track",
    "exclude_single_instrument",
    "load_mono",
    "make_generator",
    "parse_piece_name",
    "scan_solos",
    "scan_urmp",
    "select_split",
    "split_solos",
]
