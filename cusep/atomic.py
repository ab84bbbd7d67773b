"""Atomic writes, the one way cusep puts a file or a folder in place.

What is written goes to a temp file (or folder) beside the target, is synced to disk and is then
renamed onto the target; on any error the temp is removed and the target is left as it was. A
reader never sees a half-written file, and an interrupted run leaves no partial one behind.

>>> with atomic_path(out / "weights.safetensors") as tmp:
...     save_file(state, str(tmp))
>>> write_text(out / "config.json", json.dumps(config))
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_beside(path: str | Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name in ``path``'s folder: ``.<name>.<8 hex><suffix>``."""
    path = Path(path)
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}{suffix}"


def sync(path: str | Path) -> None:
    """fsync a file, or every file under a folder."""
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit(tmp: str | Path, path: str | Path) -> None:
    """Sync the finished temp file ``tmp`` and rename it onto ``path``."""
    sync(tmp)
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write; when the block ends without error it is
    synced and renamed onto ``path``, otherwise removed (``path`` untouched)."""
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def replace_dir(new: str | Path, path: str | Path) -> None:
    """Rename the folder ``new`` to ``path``; an existing ``path`` is moved aside first and
    deleted once ``new`` is in place (put back if the rename fails)."""
    new, path = Path(new), Path(path)
    if not path.exists():
        os.rename(new, path)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(path: str | Path, mode: int = 0o755) -> Iterator[Path]:
    """Yield a new temp folder beside ``path`` to fill; when the block ends without error its
    files are synced and it replaces ``path`` (:func:`replace_dir`), otherwise it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(mode)
        yield tmp
        sync(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["atomic_dir", "atomic_path", "commit", "replace_dir", "sync", "temp_beside",
           "write_text"]
