"""What the commands share: the console, the one error line, inputs (files and folders), where
stems go and how they are written, progress, and the one way to report a file that failed.

Nothing here imports torch at module level: ``--help`` and argument errors stay fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import CusepError
from ..progress import progress_bar

if TYPE_CHECKING:  # torch (under cusep.audio and cusep.separate) loads when a command runs
    import numpy as np

    from ..detect import DetectionResult
    from ..separate import Separator

console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line (``message`` is plain text, never markup); return the Exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def file_failed(path: Path, exc: BaseException, show: bool = True) -> str:
    """Why ``path`` could not be read or processed -> the reason without the path (audio errors
    already name the file); unless ``show`` is False, also printed as ``error: path: reason``."""
    detail = str(exc).removeprefix(f"{path}: ")
    if show:
        fail(f"{path}: {detail}")
    return detail


def collect_inputs(inputs: list[Path], exclude: Path | None = None) -> list[Path]:
    """Files as given, folders expanded to the audio/video files they hold (sorted, recursive),
    each file once.

    A folder scan skips hidden files (``.name``, e.g. macOS ``._x.wav``) and anything under
    ``exclude`` (the output folder, so earlier stems are not separated again).
    """
    from ..audio import AUDIO_EXTENSIONS

    skip = exclude.resolve() if exclude is not None else None

    def wanted(p: Path) -> bool:
        if not p.is_file() or p.suffix.lower() not in AUDIO_EXTENSIONS or p.name.startswith("."):
            return False
        return skip is None or not p.resolve().is_relative_to(skip)

    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if wanted(p))
            if not found:
                raise CusepError(f"folder '{item}' holds no audio files "
                                 f"({', '.join(sorted(AUDIO_EXTENSIONS))})")
            files.extend(found)
        else:
            files.append(item)
    unique: dict[Path, Path] = {}  # a file given twice (or also inside a folder) runs once
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def output_paths(path: Path, codes: tuple[str, ...], out: Path, template: str,
                 ext: str) -> dict[str, Path]:
    """Where each stem of ``path`` goes, from the ``--filename`` template: relative paths that
    stay inside ``out``, with the format's extension and names the file system can hold.

    Fields: ``{track}`` (the input's name without extension), ``{parent}`` (the name of the
    folder that holds it), ``{stem}`` (the instrument code or ``rest``), ``{ext}``."""
    if not template.strip():
        raise CusepError("--filename is empty; give a template such as '{track}/{stem}.{ext}'")
    parent = path.resolve().parent.name or "root"
    try:
        paths = {c: Path(template.format(track=path.stem, parent=parent, stem=c, ext=ext))
                 for c in codes}
    except (KeyError, IndexError, ValueError) as exc:
        raise CusepError(f"bad --filename template '{template}' ({exc}); "
                         "use the fields {track}, {parent}, {stem} and {ext}") from None
    root = out.resolve()
    for rel in paths.values():
        target = (out / rel).resolve()
        if rel.is_absolute() or ".." in rel.parts or not target.is_relative_to(root) \
                or target == root:
            raise CusepError(f"'{path}' would write '{rel}', outside the output folder '{out}'; "
                             "use a relative --filename without '..' (or rename the input)")
        if rel.suffix.lower() != f".{ext}":
            raise CusepError(f"--filename '{template}' gives '{rel.name}', but this --format "
                             f"writes .{ext} files; end the template with .{{ext}}")
        long = [p for p in rel.parts if len(p.encode()) > 240]
        if long:
            raise CusepError(f"--filename '{template}' makes a name of {len(long[0].encode())} "
                             "bytes for "
                             f"'{path.name}' (at most 240); use a shorter template or input name")
    return {c: out / rel for c, rel in paths.items()}


@dataclass(frozen=True)
class Output:
    """Where and how stems are written (the output options of ``cusep separate``)."""

    folder: Path
    template: str
    fmt: str
    clip: str
    force: bool
    bitrate: int | None = None

    def paths(self, path: Path, stems: tuple[str, ...]) -> dict[str, Path]:
        from ..audio import FORMAT_EXTENSIONS

        return output_paths(path, stems, self.folder, self.template, FORMAT_EXTENSIONS[self.fmt])


def model_label(sep: Separator) -> str:
    """A Hub model as ``org/name@revision (commit ...)``, not by its snapshot hash."""
    return sep.model_dir.label if sep.model_dir is not None else sep.name


def detected_line(path: Path, result: DetectionResult) -> str:
    """'mix.wav: vn 0.93, vc 0.81 (threshold 0.42)', most probable first (rich markup
    escaped)."""
    probs = result.confidences()
    found = ", ".join(f"{c} {probs[c]:.2f}"
                      for c in sorted(result.detected, key=lambda c: -probs[c])) or "nothing"
    return f"detected in {escape(str(path))}: {found} ({result.threshold_text()})"


@contextmanager
def file_progress(name: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar (hidden when stderr is not a terminal) -> its update function,
    ``update(done, total)``, in samples."""
    with progress_bar(count=False, console=console, transient=True,
                      disable=not console.is_terminal) as bar:
        task = bar.add_task(escape(name), total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def write_stems(blocks: Iterator[np.ndarray], paths: dict[str, Path], rate: int,
                channels: int, output: Output) -> tuple[float, int]:
    """Stream the separator's blocks (K, channels, n) into one atomic writer per stem; if
    anything fails, no temp file remains and the stems this call created are removed.

    Returns the factor every stem was divided by (1.0: none) and the frames written: with
    ``clip="rescale"``, stems that exceed full scale in an integer format are all divided by
    their common peak, so they still sum to the input, scaled."""
    from ..audio import AudioWriter  # imports torch: only when a command runs

    writers: list[AudioWriter] = []
    created: list[Path] = []
    try:
        for p in paths.values():
            writers.append(AudioWriter(p, rate, channels, output.fmt, clip=output.clip,
                                       bitrate=output.bitrate))
        for block in blocks:
            for writer, stem in zip(writers, block, strict=True):
                writer.write(stem)
        peak = max((w.peak for w in writers), default=0.0)
        scale = 1.0
        for writer in writers:
            is_new = not writer.path.exists()
            scale = writer.finish(peak=peak)
            if is_new:
                created.append(writer.path)
        return scale, writers[0].frames
    except BaseException:
        for writer in writers:
            writer.abort()
        for p in created:
            p.unlink(missing_ok=True)
        raise
