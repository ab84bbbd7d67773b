"""``cusep separate``: files and folders in, one stem per instrument out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..audio import AUDIO_EXTENSIONS, FORMAT_EXTENSIONS, read_audio, write_audio
from ..errors import CusepError
from ..separate import Separator, SeparatorConfig
from . import console, fail


@dataclass
class Outcome:
    path: Path
    status: str  # "ok", "skipped", "failed"
    detail: str
    seconds: float = 0.0


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given, folders expanded to the audio/video files they hold (sorted, recursive)."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise CusepError(f"folder '{item}' holds no audio files "
                                 f"({', '.join(sorted(AUDIO_EXTENSIONS))})")
            files.extend(found)
        else:
            files.append(item)
    return files


def output_paths(path: Path, codes: tuple[str, ...], out: Path, template: str,
                 ext: str) -> dict[str, Path]:
    """Where each stem of ``path`` goes, from the ``--filename`` template."""
    try:
        return {c: out / template.format(track=path.stem, stem=c, ext=ext) for c in codes}
    except (KeyError, IndexError, ValueError) as exc:
        raise CusepError(f"bad --filename template '{template}' ({exc}); "
                         "use the fields {track}, {stem} and {ext}") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def separate(
        inputs: list[Path] = typer.Argument(..., help="Audio/video files or folders."),
        instruments: str = typer.Option(
            ..., "--instruments", "-i", help="Instruments that play, e.g. 'vn,va,vc' or names."),
        model: str = typer.Option(None, "--model", "-m",
                                  help="Model name, directory or Hub id (default: registry's)."),
        out: Path = typer.Option(Path("separated"), "--out", "-o", help="Output folder."),
        filename: str = typer.Option("{track}/{stem}.{ext}", "--filename",
                                     help="Output path template: {track}, {stem}, {ext}."),
        fmt: str = typer.Option("wav16", "--format", "-f",
                                help="wav16 | wav24 | float32 | flac."),
        clip: str = typer.Option("rescale", "--clip-mode", help="rescale | clamp."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing stems."),
        device: str = typer.Option("auto", "--device", "-d", help="auto | cpu | cuda | cuda:N."),
        iterations: int = typer.Option(2, "--wiener-iterations", "--niter",
                                       help="EM Wiener iterations (0 = soft masks only)."),
        raw: bool = typer.Option(False, "--raw",
                                 help="Raw masked estimates (stems need not sum to the mix)."),
        overlap: float = typer.Option(0.25, "--overlap", help="Window overlap in [0, 1)."),
        batch_size: int = typer.Option(4, "--batch-size", help="Windows per network pass."),
        precision: str = typer.Option("auto", "--precision", help="auto | fp32 | bf16 | fp16."),
    ) -> None:
        """Separate recordings into one stem per instrument."""
        if fmt not in FORMAT_EXTENSIONS:
            raise CusepError(f"unknown --format '{fmt}'; one of {', '.join(FORMAT_EXTENSIONS)}")
        if clip not in ("rescale", "clamp"):
            raise CusepError(f"unknown --clip-mode '{clip}'; rescale or clamp")
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise CusepError(f"unknown --precision '{precision}'; auto, fp32, bf16 or fp16")
        files = collect_inputs(inputs)
        config = SeparatorConfig(wiener_iterations=iterations, overlap=overlap,
                                 batch_size=batch_size, precision=precision, residual=not raw)
        sep = Separator(model, device=device, config=config)
        codes = sep.check_instruments(instruments)
        console.print(f"model [bold]{sep.name}[/] on [bold]{sep.device}[/] ({sep.precision}), "
                      f"instruments {', '.join(codes)}, {len(files)} file(s)")
        plan = {f: output_paths(f, codes, out, filename, FORMAT_EXTENSIONS[fmt]) for f in files}
        _check_collisions(plan)
        outcomes = [_one(sep, f, codes, paths, fmt, clip, force) for f, paths in plan.items()]
        _summary(outcomes)
        if any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)


def _check_collisions(plan: dict[Path, dict[str, Path]]) -> None:
    seen: dict[Path, Path] = {}
    for src, paths in plan.items():
        for p in paths.values():
            if p in seen:
                raise CusepError(f"'{src}' and '{seen[p]}' would both write '{p}'; "
                                 "use a --filename template with {track}")
            seen[p] = src


def _one(sep: Separator, path: Path, codes: tuple[str, ...], paths: dict[str, Path], fmt: str,
         clip: str, force: bool) -> Outcome:
    existing = [p for p in paths.values() if p.exists()]
    if existing and not force:
        console.print(f"skip {path}: {existing[0]} exists (use --force to overwrite)")
        return Outcome(path, "skipped", f"{existing[0]} exists")
    start = time.perf_counter()
    try:
        audio, rate = read_audio(path)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                      transient=True) as bar:
            task = bar.add_task(path.name, total=audio.shape[-1])
            stems = sep.separate(audio, rate, codes,
                                 progress=lambda done, total: bar.update(task, completed=done))
        for code, p in paths.items():
            p.parent.mkdir(parents=True, exist_ok=True)
            write_audio(p, stems[code], rate, fmt=fmt, clip=clip)
    except CusepError as exc:
        fail(f"{path}: {exc}")
        return Outcome(path, "failed", str(exc), time.perf_counter() - start)
    except OSError as exc:
        fail(f"{path}: {exc.strerror or exc}")
        return Outcome(path, "failed", str(exc), time.perf_counter() - start)
    seconds = time.perf_counter() - start
    duration = audio.shape[-1] / rate
    console.print(f"[green]ok[/] {path} -> {paths[codes[0]].parent} "
                  f"({duration:.1f} s audio in {seconds:.1f} s, {duration / seconds:.0f}x real time)")
    return Outcome(path, "ok", f"{len(codes)} stems", seconds)


def _summary(outcomes: list[Outcome]) -> None:
    if len(outcomes) < 2:
        return
    table = Table(title="cusep separate")
    for col in ("input", "status", "detail", "time (s)"):
        table.add_column(col)
    for o in outcomes:
        style = {"ok": "green", "skipped": "yellow", "failed": "red"}[o.status]
        table.add_row(str(o.path), f"[{style}]{o.status}[/]", o.detail, f"{o.seconds:.1f}")
    console.print(table)
