"""Claims on output files, so that two cusep processes never write the same stem, and what a
killed run left behind (hidden ``.part`` files, empty folders) is cleaned up by the next one."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import CusepError


def _lock(path: Path) -> Path:
    return path.parent / f".{path.name}.cusep-lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _take(path: Path) -> Path:
    """Create the lock of ``path`` holding this pid; a dead holder's lock and temp files are
    removed first. Raises CusepError when a live process holds it."""
    lock = _lock(path)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise CusepError(f"{path} is being written by another cusep process (pid {pid});"
                                 " wait for it to finish or choose another --out") from None
            lock.unlink(missing_ok=True)  # the holder died (kill -9): take over
            for stale in path.parent.glob(f".{path.name}.*.part"):
                stale.unlink(missing_ok=True)
            for stale in path.parent.glob(f".{path.name}.*.tmp"):
                stale.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return lock
    raise CusepError(f"cannot lock {path} for writing; remove {lock} if no cusep is running")


@contextmanager
def claimed(paths: Iterable[Path], root: Path) -> Iterator[None]:
    """Hold a lock on every path while the block runs; afterwards remove the locks and the
    folders under ``root`` (not ``root`` itself) that the block left empty."""
    paths = list(paths)
    locks: list[Path] = []
    made = [p.parent for p in paths if not p.parent.exists()]
    try:
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            locks.append(_take(p))
        yield
    finally:
        for lock in locks:
            lock.unlink(missing_ok=True)
        for folder in sorted(set(made), key=lambda f: len(f.parts), reverse=True):
            remove_empty(folder, root)


def remove_empty(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    root = root.resolve()
    folder = folder.resolve()
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
