"""Reader for the Solos layout: ``<root>/wav11k/<Instrument>/<id>.wav``."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import CusepError
from ..instruments import INSTRUMENTS

LAYOUT_HINT = "expected <root>/wav11k/<Instrument>/<id>.wav with instrument folders " + ", ".join(
    i.solos for i in INSTRUMENTS
)
_BY_FOLDER = {i.solos.lower(): i.code for i in INSTRUMENTS}
_AUDIO_EXTS = (".wav", ".flac")


def scan_solos(root: str | Path) -> dict[str, list[Path]]:
    """Instrument code -> sorted audio files, in class order.

    ``root`` is the Solos folder (holding ``wav11k``) or the ``wav11k`` folder itself. Unknown
    instrument folders are skipped with a warning. Raises CusepError when ``root`` is missing or
    holds no audio.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise CusepError(f"Solos folder {root} does not exist; {LAYOUT_HINT}.")
    if not root.is_dir():
        raise CusepError(f"{root} is not a folder; {LAYOUT_HINT}.")
    base = root / "wav11k" if (root / "wav11k").is_dir() else root
    found: dict[str, list[Path]] = {}
    for folder in sorted(base.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        code = _BY_FOLDER.get(folder.name.lower())
        if code is None:
            warnings.warn(
                f"skipping {folder}: not one of the Solos instrument folders", stacklevel=2
            )
            continue
        files = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _AUDIO_EXTS
        )
        if files:
            found[code] = files
    if not found:
        raise CusepError(f"no Solos audio found in {base}; {LAYOUT_HINT}.")
    return {i.code: found[i.code] for i in INSTRUMENTS if i.code in found}


def split_solos(
    files: dict[str, list[Path]], valid_fraction: float = 0.2
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(train, valid): the last ``valid_fraction`` of each instrument's sorted files is valid.

    An instrument with a single file keeps it for training.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise CusepError(f"valid_fraction must be in [0, 1), got {valid_fraction}.")
    train: dict[str, list[Path]] = {}
    valid: dict[str, list[Path]] = {}
    for code, paths in files.items():
        paths = sorted(paths)
        n_valid = min(round(len(paths) * valid_fraction), len(paths) - 1)
        if valid_fraction > 0 and len(paths) > 1:
            n_valid = max(n_valid, 1)
        cut = len(paths) - n_valid
        train[code] = paths[:cut]
        if n_valid:
            valid[code] = paths[cut:]
    return train, valid
