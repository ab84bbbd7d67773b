"""Training and validation banks from the dataset layouts a run names (``data.layout``): Solos
(one instrument per recording) or URMP (multitrack pieces, also what ``cusep synth`` writes);
for a visual model only the recordings with player crops, read alongside the audio.

The one place that scans the training and validation roots and splits a validation part off
when no validation folder is given (the last ``valid_fraction`` of the files / pieces).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CusepError
from .mixing import StemBank
from .solos import scan_solos, split_solos
from .urmp import Piece, scan_urmp

if TYPE_CHECKING:
    from ..visual import VisualConfig

Log = Callable[[str], None]


class DataLayout(Protocol):
    """What the banks need of a run's data settings (:class:`cusep.config.DataConfig`)."""

    train: tuple[str, ...]
    valid: tuple[str, ...]
    layout: str
    valid_fraction: float
    frame_step: float


def solos_files(roots: Sequence[str], keep: Callable[[Path], bool] | None = None
                ) -> tuple[dict[str, list[Path]], int]:
    """The Solos recordings under ``roots`` by instrument code (only those ``keep`` accepts)
    -> (files, how many were dropped)."""
    files: dict[str, list[Path]] = {}
    dropped = 0
    for root in roots:
        for code, paths in scan_solos(root).items():
            kept = paths if keep is None else [p for p in paths if keep(p)]
            dropped += len(paths) - len(kept)
            if kept or keep is None:
                files.setdefault(code, []).extend(kept)
    return files, dropped


def urmp_pieces(roots: Sequence[str], keep: Callable[[Piece], bool] | None = None
                ) -> tuple[list[Piece], list[Piece]]:
    """The URMP-layout pieces under ``roots`` -> (those ``keep`` accepts, the others)."""
    pieces = [p for root in roots for p in scan_urmp(root)]
    if keep is None:
        return pieces, []
    return [p for p in pieces if keep(p)], [p for p in pieces if not keep(p)]


def split_pieces(pieces: list[Piece], valid_fraction: float) -> tuple[list[Piece], list[Piece]]:
    """The last ``valid_fraction`` of the pieces (at least one) for validation."""
    cut = max(1, int(round(len(pieces) * (1 - valid_fraction))))
    return pieces[:cut], pieces[cut:] or pieces[-1:]


def train_valid(data: DataLayout, scan: Callable[[tuple[str, ...]], Any],
                split: Callable[[Any, float], tuple[Any, Any]]) -> tuple[Any, Any]:
    """(training, validation) items: ``scan`` of ``data.train`` and of ``data.valid``, or, with
    no validation folder, ``split`` of the training items by ``data.valid_fraction``."""
    train = scan(data.train)
    if data.valid:
        return train, scan(data.valid)
    return split(train, data.valid_fraction)


def load_banks(data: DataLayout, rate: int, log: Log, visual: VisualConfig | None = None,
               encode: Callable | None = None, notes: bool = False
               ) -> tuple[StemBank, StemBank]:
    """Training and validation audio at ``rate`` as ``data`` says (validation split off if not
    given); with ``visual`` also the player crops, each source's passed through ``encode``
    (e.g. to backbone features) when given; with ``notes`` the pieces' scores (URMP layout)."""
    if not data.train:
        raise CusepError("no training data given; pass --data DIR (URMP layout, e.g. made by "
                         "'cusep synth') or set data.train in the preset")
    if notes and (visual is not None or data.layout != "urmp"):
        raise CusepError("a score-conditioned model trains on URMP-layout pieces with their "
                         "Sco_*.mid scores (as 'cusep synth' writes them), without video")
    if visual is not None:
        train, valid = _visual_banks(data, rate, visual, log, encode or (lambda track: track))
    elif data.layout == "solos":
        files, valid_files = train_valid(data, lambda roots: solos_files(roots)[0], split_solos)
        train, valid = StemBank.from_solos(files, rate), StemBank.from_solos(valid_files, rate)
    else:
        pieces, valid_pieces = train_valid(data, lambda roots: urmp_pieces(roots)[0],
                                           split_pieces)
        train = StemBank.from_urmp(pieces, rate, notes=notes)
        valid = StemBank.from_urmp(valid_pieces, rate, notes=notes)
    _check_banks(train, valid, log)
    return train, valid


def _check_banks(train: StemBank, valid: StemBank, log: Log) -> None:
    for name, bank in (("train", train), ("valid", valid)):
        if len(bank) == 0:
            raise CusepError(f"the {name} data holds no readable audio; check --data")
        for path, reason in bank.skipped:
            log(f"skipped unreadable {path}: {reason}")
        minutes = bank.minutes_per_instrument()
        log(f"{name}: {len(bank)} items, {sum(minutes.values()):.1f} source-minutes, "
            + ", ".join(f"{c} {m:.1f}" for c, m in minutes.items()))


def _visual_banks(data: DataLayout, rate: int, visual: VisualConfig, log: Log,
                  encode: Callable) -> tuple[StemBank, StemBank]:
    """Audio plus cached player crops: Solos recordings that have a frames folder, URMP pieces
    that have a video and boxes.json (the others are skipped with one message)."""
    from .frames import piece_has_video, read_piece_frames, read_solos_frames, solos_frame_files

    step, size = data.frame_step, visual.crop_size
    if data.layout == "solos":
        def with_frames(roots: tuple[str, ...]) -> dict[str, list[Path]]:
            files, dropped = solos_files(roots, keep=lambda p: bool(solos_frame_files(p)))
            if dropped:
                log(f"skipped {dropped} Solos recording(s) without frames "
                    "(<root>/frames/<Instrument>/<id>/NNNN.jpg)")
            if not files:
                raise CusepError(f"no Solos recording in {', '.join(roots)} has frames; a visual "
                                 "preset needs <root>/frames/<Instrument>/<id>/NNNN.jpg")
            return files

        files, valid_files = train_valid(data, with_frames, split_solos)

        def solo(path: Path, seconds: float):
            return encode(read_solos_frames(path, seconds, step, size))

        banks = [StemBank.from_solos(f, rate, frames=solo) for f in (files, valid_files)]
    else:
        def with_video(roots: tuple[str, ...]) -> list[Piece]:
            kept, dropped = urmp_pieces(roots, keep=piece_has_video)
            if dropped:
                names = [p.name for p in dropped]
                more = f", ... ({len(names) - 3} more)" if len(names) > 3 else ""
                log(f"skipped {len(names)} piece(s) without Vid_*.mp4 and boxes.json: "
                    f"{', '.join(names[:3])}{more}")
            if not kept:
                raise CusepError(f"no piece in {', '.join(roots)} has a video and boxes.json; "
                                 "a visual preset needs Vid_<piece>.mp4 + boxes.json per piece")
            return kept

        pieces, valid_pieces = train_valid(data, with_video, split_pieces)

        def piece(p: Piece, seconds: float):
            return {c: encode(t) for c, t in read_piece_frames(p, seconds, step, size).items()}

        banks = [StemBank.from_urmp(p, rate, frames=piece) for p in (pieces, valid_pieces)]
    _check_banks(*banks, log)
    return banks[0], banks[1]
