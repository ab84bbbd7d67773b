"""``cusep separate``: files and folders in, one stem per instrument out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import typer
from rich.markup import escape
from rich.table import Table

from ..audio import AUDIO_EXTENSIONS, FORMAT_EXTENSIONS, AudioWriter, read_audio
from ..errors import CusepError
from ..progress import progress_bar
from ..separate import Separator, SeparatorConfig, is_auto, stem_names
from . import console, fail
from .claim import claimed, remove_empty


@dataclass(frozen=True)
class Output:
    """Where and how stems are written (the output options of ``cusep separate``)."""

    folder: Path
    template: str
    fmt: str
    clip: str
    force: bool

    def paths(self, path: Path, stems: tuple[str, ...]) -> dict[str, Path]:
        return output_paths(path, stems, self.folder, self.template, FORMAT_EXTENSIONS[self.fmt])


@dataclass
class Outcome:
    path: Path
    status: str  # "ok", "skipped", "failed"
    detail: str
    seconds: float = 0.0


def collect_inputs(inputs: list[Path], exclude: Path | None = None) -> list[Path]:
    """Files as given, folders expanded to the audio/video files they hold (sorted, recursive),
    each file once.

    A folder scan skips hidden files (``.name``, e.g. macOS ``._x.wav``) and anything under
    ``exclude`` (the output folder, so earlier stems are not separated again).
    """
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
    stay inside ``out``, with the format's extension and names the file system can hold."""
    if not template.strip():
        raise CusepError("--filename is empty; give a template such as '{track}/{stem}.{ext}'")
    try:
        paths = {c: Path(template.format(track=path.stem, stem=c, ext=ext)) for c in codes}
    except (KeyError, IndexError, ValueError) as exc:
        raise CusepError(f"bad --filename template '{template}' ({exc}); "
                         "use the fields {track}, {stem} and {ext}") from None
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


def register(app: typer.Typer) -> None:
    @app.command()
    def separate(
        inputs: list[Path] = typer.Argument(..., help="Audio/video files or folders."),
        instruments: str = typer.Option(
            None, "--instruments", "-i",
            help="Instruments that play, e.g. 'vn,va,vc' or names; 'auto' detects them."),
        boxes: Path = typer.Option(
            None, "--boxes",
            help="boxes.json: one box per player of a video -> one stem per player."),
        overlay: Path = typer.Option(
            None, "--overlay", help="With --boxes: write the video with each box labelled."),
        model: str = typer.Option(None, "--model", "-m",
                                  help="Model name, directory or Hub id (default: registry's)."),
        detector: str = typer.Option(None, "--detector",
                                     help="Detector for --instruments auto (default: registry's)."),
        out: Path = typer.Option(Path("separated"), "--out", "-o", help="Output folder."),
        filename: str = typer.Option("{track}/{stem}.{ext}", "--filename",
                                     help="Output path template: {track}, {stem}, {ext}."),
        fmt: str = typer.Option("wav16", "--format", "-f",
                                help="wav16 | wav24 | float32 | flac."),
        clip: str = typer.Option("rescale", "--clip-mode", help="rescale | clamp."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing stems."),
        device: str = typer.Option("auto", "--device", "-d", help="auto | cpu | cuda | cuda:N."),
        rest: bool = typer.Option(False, "--rest", help="The instruments are only some of "
                                  "those playing: also write a 'rest' stem with the others."),
        iterations: int = typer.Option(SeparatorConfig.wiener_iterations,
                                       "--wiener-iterations", "--niter",
                                       help="EM Wiener iterations (0 = soft masks only)."),
        mix_floor: float = typer.Option(SeparatorConfig.mix_floor, "--mix-floor",
                                        help="Share of the mixture in every stem (0..1): a "
                                             "safeguard for poor estimates."),
        raw: bool = typer.Option(False, "--raw",
                                 help="Raw masked estimates: no residual sharing, no mix "
                                      "floor (stems need not sum to the mix)."),
        overlap: float = typer.Option(0.25, "--overlap", help="Window overlap in [0, 1)."),
        batch_size: int = typer.Option(4, "--batch-size", help="Windows per network pass."),
        precision: str = typer.Option("auto", "--precision", help="auto | fp32 | bf16 | fp16."),
        threads: int = typer.Option(None, "--threads",
                                    help="CPU threads for torch (default: torch's choice)."),
    ) -> None:
        """Separate recordings into one stem per instrument."""
        if fmt not in FORMAT_EXTENSIONS:
            raise CusepError(f"unknown --format '{fmt}'; one of {', '.join(FORMAT_EXTENSIONS)}")
        if clip not in ("rescale", "clamp"):
            raise CusepError(f"unknown --clip-mode '{clip}'; rescale or clamp")
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise CusepError(f"unknown --precision '{precision}'; auto, fp32, bf16 or fp16")
        if threads is not None:
            if threads < 1:
                raise CusepError(f"--threads must be at least 1 (got {threads})")
            torch.set_num_threads(threads)
        if instruments is None and boxes is None:
            raise CusepError("name the instruments with --instruments (e.g. vn,va,vc or auto), "
                             "or give a video with --boxes boxes.json")
        if overlay is not None and boxes is None:
            raise CusepError("--overlay needs --boxes (the boxes to draw)")
        if rest and boxes is not None:
            raise CusepError("--rest is for audio with a partial --instruments list; with "
                             "--boxes every player gets a stem, so leave --rest out")
        files = collect_inputs(inputs, exclude=out)
        if boxes is not None and len(files) != 1:
            raise CusepError(f"--boxes describes the players of one video, but {len(files)} "
                             "inputs were given; separate one video at a time")
        config = SeparatorConfig(wiener_iterations=iterations, overlap=overlap,
                                 batch_size=batch_size, precision=precision, residual=not raw,
                                 mix_floor=mix_floor)
        sep = Separator(model, device=device, config=config)
        if boxes is not None:
            from .separate_video import separate_players

            separate_players(sep, files[0], boxes, instruments, detector, overlay,
                             Output(out, filename, fmt, clip, force))
            return
        outcomes: list[Outcome] = []
        if is_auto(instruments):
            codes_of = _detect_all(files, sep, detector, outcomes)
            shown = "auto"
        else:
            codes = sep.check_instruments(instruments)
            codes_of = {f: codes for f in files}
            shown = ", ".join(codes) + (" + rest" if rest else "")
        console.print(f"model [bold]{escape(sep.name)}[/] on [bold]{sep.device}[/] "
                      f"({sep.precision}), instruments {shown}, {len(codes_of)} file(s)")
        plan = {f: output_paths(f, stem_names(codes_of[f], rest), out, filename,
                                FORMAT_EXTENSIONS[fmt]) for f in codes_of}
        _check_collisions(plan, filename)
        made_out = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CusepError(f"cannot create output folder '{out}' ({exc.strerror or exc}); "
                             "choose a writable --out") from None
        try:
            for f, paths in plan.items():
                outcomes.append(_one(sep, f, codes_of[f], paths, fmt, clip, force, rest, out))
        except KeyboardInterrupt:
            done = sum(o.status == "ok" for o in outcomes)
            console.print(f"interrupted: {done} of {len(plan)} input(s) separated and kept; "
                          "the stems of the input under way were not written", soft_wrap=True)
            raise typer.Exit(130) from None
        finally:
            if made_out:
                remove_empty(out, out.parent)
        _summary(outcomes)
        if any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)


def _detect_all(files: list[Path], sep: Separator, detector: str | None,
                outcomes: list[Outcome]) -> dict[Path, tuple[str, ...]]:
    """Detect the instruments of every file (printing them with their confidences) -> the
    files with detections and their codes; the others become failed ``outcomes``. Raises when
    no file has any instrument, before anything is written."""
    from ..detect import Detector
    from .detect import detected_line

    det = Detector(detector, device=sep.device)
    codes_of: dict[Path, tuple[str, ...]] = {}
    for path in files:
        try:
            audio, rate = read_audio(path)
            result = det.detect(audio, rate)
        except (CusepError, OSError) as exc:
            detail = str(exc).removeprefix(f"{path}: ")
            fail(f"{path}: {detail}")
            outcomes.append(Outcome(path, "failed", detail))
            continue
        if not result.detected:
            message = f"{result.nothing_detected(str(path))}; nothing written"
            if len(files) == 1:
                raise CusepError(f"{message}; pass --instruments to name them")
            fail(message)
            outcomes.append(Outcome(path, "failed", "no instrument detected"))
            continue
        console.print(detected_line(path, result), soft_wrap=True)
        known = tuple(c for c in result.detected if c in sep.instruments)
        if len(known) < len(result.detected):
            fail(f"{path}: model {sep.name} cannot separate "
                 f"{', '.join(c for c in result.detected if c not in known)}")
            outcomes.append(Outcome(path, "failed", "detected instruments the model lacks"))
            continue
        codes_of[path] = known
    if not codes_of:  # every file already said why
        _summary(outcomes)
        raise typer.Exit(1)
    return codes_of


def _check_collisions(plan: dict[Path, dict[str, Path]], template: str) -> None:
    """Refuse a plan in which two stems (of one input or of two) would go to the same file."""
    seen: dict[Path, Path] = {}
    for src, paths in plan.items():
        for p in paths.values():
            if p in seen and seen[p] == src:
                raise CusepError(f"--filename '{template}' gives every stem of '{src}' the same "
                                 f"path '{p}'; include {{stem}} in the template")
            if p in seen:
                raise CusepError(f"'{src}' and '{seen[p]}' would both write '{p}'; "
                                 "use a --filename template with {track} (or rename one)")
            seen[p] = src


def _one(sep: Separator, path: Path, codes: tuple[str, ...], paths: dict[str, Path], fmt: str,
         clip: str, force: bool, rest: bool, out: Path) -> Outcome:
    existing = [p for p in paths.values() if p.exists()]
    if existing and not force:
        console.print(f"skip {escape(str(path))}: {escape(str(existing[0]))} exists "
                      "(use --force to overwrite)", soft_wrap=True)
        return Outcome(path, "skipped", f"{existing[0]} exists")
    start = time.perf_counter()
    try:
        audio, rate = read_audio(path)
        with claimed(paths.values(), out), file_progress(path.name, audio.shape[-1]) as update:
            blocks = sep.iter_blocks(audio, rate, codes, progress=update, rest=rest)
            scale = write_stems(blocks, paths, rate, audio.shape[0], fmt, clip)
    except (CusepError, OSError) as exc:
        detail = str(exc).removeprefix(f"{path}: ")  # audio errors already name the file
        fail(f"{path}: {detail}")
        return Outcome(path, "failed", detail, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    duration = audio.shape[-1] / rate
    if scale != 1.0:
        console.print(f"[yellow]note:[/] stems of {escape(str(path))} exceed full scale (peak "
                      f"{1 / scale:.2f}): all divided by {1 / scale:.2f}, so they still sum to "
                      "the input at that level; --format float32 keeps the levels",
                      soft_wrap=True)
    console.print(f"[green]ok[/] {escape(str(path))} -> {escape(str(paths[codes[0]].parent))} "
                  f"({duration:.1f} s audio in {seconds:.1f} s, "
                  f"{duration / max(seconds, 1e-9):.0f}x real time)", soft_wrap=True)
    n = len(paths)
    return Outcome(path, "ok", f"{n} stem{'s' if n > 1 else ''}", seconds)


@contextmanager
def file_progress(name: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar (hidden when stderr is not a terminal) -> its update function,
    ``update(done, total)``, in samples."""
    with progress_bar(count=False, console=console, transient=True,
                      disable=not console.is_terminal) as bar:
        task = bar.add_task(escape(name), total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def write_stems(blocks: Iterator[np.ndarray], paths: dict[str, Path], rate: int,
                channels: int, fmt: str, clip: str) -> float:
    """Stream the separator's blocks (K, channels, n) into one atomic writer per stem; if
    anything fails, no temp file remains and the stems this call created are removed.

    Returns the factor every stem was divided by (1.0: none): with ``clip="rescale"``, stems
    that exceed full scale in an integer format are all divided by their common peak, so they
    still sum to the input, scaled."""
    writers: list[AudioWriter] = []
    created: list[Path] = []
    try:
        for p in paths.values():
            writers.append(AudioWriter(p, rate, channels, fmt, clip=clip))
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
        return scale
    except BaseException:
        for writer in writers:
            writer.abort()
        for p in created:
            p.unlink(missing_ok=True)
        raise


def _summary(outcomes: list[Outcome]) -> None:
    if len(outcomes) < 2:
        return
    table = Table(title="cusep separate")
    table.add_column("input", overflow="fold")  # a path is never cut short with an ellipsis
    for col in ("status", "detail", "time (s)"):
        table.add_column(col)
    for o in outcomes:
        style = {"ok": "green", "skipped": "yellow", "failed": "red"}[o.status]
        table.add_row(escape(str(o.path)), f"[{style}]{o.status}[/]", escape(o.detail),
                      f"{o.seconds:.1f}")
    console.print(table)
