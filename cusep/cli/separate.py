"""``cusep separate``: files and folders in, one stem per instrument out."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import CusepError
from ..guide import ScoreGuide
from .claim import claimed, remove_empty
from .common import (
    Output,
    collect_inputs,
    console,
    detected_line,
    fail,
    file_failed,
    file_progress,
    model_label,
    write_stems,
)
from .options import (
    BATCH_SIZE,
    MIX_FLOOR,
    MP3_BITRATES,
    OVERLAP,
    WIENER_ITERATIONS,
    ClipMode,
    Format,
    Precision,
    device_option,
    instruments_epilog,
)

if TYPE_CHECKING:  # torch (under cusep.audio and cusep.separate) loads when a command runs
    import numpy as np

    from ..audio import AudioSource
    from ..separate import Separator


@dataclass(frozen=True)
class Span:
    """The part of each input to separate (``--start``, ``--duration``, in seconds)."""

    start: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        if not (self.start >= 0 and self.start < float("inf")):
            raise CusepError(f"--start must be 0 or more seconds (got {self.start})")
        if self.duration is not None and not (0 < self.duration < float("inf")):
            raise CusepError(f"--duration must be more than 0 seconds (got {self.duration})")

    def frames(self, source: AudioSource) -> tuple[int, int | None]:
        """(first frame, stop frame or None for the end) in ``source``; CusepError when the
        span starts past the end the file states."""
        rate = source.sample_rate
        start = round(self.start * rate)
        if start and source.frames is not None and start >= source.frames:
            raise CusepError(f"{source.path}: --start {self.start:g} s is past its end "
                             f"({source.frames / rate:.2f} s); give an earlier start")
        stop = None if self.duration is None else start + max(1, round(self.duration * rate))
        return start, stop

    def read(self, path: Path) -> tuple[np.ndarray, int]:
        """The span of ``path`` decoded -> (audio (channels, n), sample rate)."""
        import numpy as np

        from ..audio import open_audio

        source = open_audio(path)
        start, stop = self.frames(source)
        blocks = list(source.blocks(1 << 20, start=start, stop=stop))
        return np.concatenate(blocks, axis=1), source.sample_rate


@dataclass
class Outcome:
    path: Path
    status: str  # "ok", "skipped", "failed"
    detail: str
    seconds: float = 0.0
    audio_seconds: float = 0.0
    stems: dict[str, Path] = field(default_factory=dict)  # written (ok) or present (skipped)


def register(app: typer.Typer) -> None:
    @app.command(epilog=instruments_epilog() + " Output formats: see README (--format).")
    def separate(
        inputs: list[Path] = typer.Argument(..., metavar="FILE_OR_FOLDER",
                                            help="Audio/video files or folders."),
        instruments: str = typer.Option(
            None, "--instruments", "-i",
            help="Instruments that play, e.g. 'vn,va,vc' or names; 'auto' detects them."),
        boxes: Path = typer.Option(
            None, "--boxes",
            help="boxes.json: one box per player of a video -> one stem per player."),
        overlay: Path = typer.Option(
            None, "--overlay", help="With --boxes: write the video with each box labelled."),
        model: str = typer.Option(None, "--model", "-m",
                                  help="Model name, directory or Hub id (default: registry's; "
                                       "with --score its score model)."),
        detector: str = typer.Option(None, "--detector",
                                     help="Detector for --instruments auto (default: registry's)."),
        out: Path = typer.Option(Path("separated"), "--out", "-o", help="Output folder."),
        filename: str = typer.Option("{track}/{stem}.{ext}", "--filename",
                                     help="Output path template: {track}, {parent} (the "
                                          "input's folder), {stem}, {ext}."),
        fmt: Format = typer.Option("wav16", "--format", "-f",
                                   help="Output format (wav = wav16; flac24: 24-bit FLAC)."),
        clip: ClipMode = typer.Option("rescale", "--clip-mode",
                                      help="Integer formats: rescale all stems by their common "
                                           "peak, or clamp samples."),
        bitrate: int = typer.Option(None, "--bitrate",
                                    help="With --format mp3: kbit/s, constant (default 320)."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing stems."),
        device: str = device_option(),
        rest: bool = typer.Option(False, "--rest", help="The instruments are only some of "
                                  "those playing: also write a 'rest' stem with the others."),
        iterations: int = typer.Option(WIENER_ITERATIONS, "--wiener-iterations", "--niter",
                                       help="EM Wiener iterations (0 = soft masks only)."),
        mix_floor: float = typer.Option(MIX_FLOOR, "--mix-floor",
                                        help="Share of the mixture in every stem (0..1): a "
                                             "safeguard for poor estimates."),
        raw: bool = typer.Option(False, "--raw",
                                 help="Raw masked estimates: no residual sharing, no mix "
                                      "floor (stems need not sum to the mix)."),
        overlap: float = typer.Option(OVERLAP, "--overlap", help="Window overlap in [0, 1)."),
        batch_size: int = typer.Option(BATCH_SIZE, "--batch-size",
                                       help="Windows per network pass."),
        precision: Precision = typer.Option("auto", "--precision",
                                            help="auto: bf16 on CPUs with AMX/AVX512-BF16, "
                                                 "autocast on CUDA."),
        score: Path = typer.Option(None, "--score",
                                   help="The input's score (.mid, .musicxml, .mxl): names the "
                                        "instruments, is aligned to the input and guides the "
                                        "masks by its notes."),
        start: float = typer.Option(0.0, "--start", help="Separate from this many seconds on."),
        duration: float = typer.Option(None, "--duration",
                                       help="Separate this many seconds (default: to the end)."),
        threads: int = typer.Option(None, "--threads",
                                    help="CPU threads for torch (default: torch's choice)."),
        as_json: bool = typer.Option(False, "--json",
                                     help="Print a JSON summary of the run on stdout (the "
                                          "messages stay on stderr)."),
    ) -> None:
        """Separate recordings into one stem per instrument."""
        began = time.perf_counter()
        if bitrate is not None and fmt != "mp3":
            raise CusepError("--bitrate is for --format mp3; leave it out for lossless formats")
        if bitrate is not None and bitrate not in MP3_BITRATES:
            raise CusepError(f"--bitrate {bitrate} is not an mp3 bitrate; use one of "
                             f"{', '.join(map(str, MP3_BITRATES))}")
        if threads is not None and threads < 1:
            raise CusepError(f"--threads must be at least 1 (got {threads})")
        if instruments is None and boxes is None and score is None:
            raise CusepError("name the instruments with --instruments (e.g. vn,va,vc or auto), "
                             "give the score with --score, or a video with --boxes boxes.json")
        if overlay is not None and boxes is None:
            raise CusepError("--overlay needs --boxes (the boxes to draw)")
        if rest and boxes is not None:
            raise CusepError("--rest is for audio with a partial --instruments list; with "
                             "--boxes every player gets a stem, so leave --rest out")
        span = Span(start, duration)
        if boxes is not None and span != Span():
            raise CusepError("--start and --duration are for audio inputs; with --boxes the "
                             "whole video is separated (cut it first, e.g. with ffmpeg)")
        if score is not None and (boxes is not None or span != Span()):
            raise CusepError("--score aligns a whole audio recording; leave out --boxes, "
                             "--start and --duration")
        if as_json and boxes is not None:
            raise CusepError("--json summarises audio runs; with --boxes leave --json out "
                             "(the player table is printed)")
        from ..runtime import tune_cpu_allocator
        from ..separate import (  # torch: only past the argument checks
            Separator,
            SeparatorConfig,
            is_auto,
            stem_names,
        )

        if score is not None and instruments is not None and is_auto(instruments):
            raise CusepError("--score names the instruments; leave out --instruments auto")
        if threads is not None:
            import torch

            torch.set_num_threads(threads)

        files = collect_inputs(inputs, exclude=out)
        if score is not None and len(files) != 1:
            raise CusepError(f"--score is the score of one recording, but {len(files)} inputs "
                             "were given; separate one recording at a time")
        if boxes is not None and len(files) != 1:
            raise CusepError(f"--boxes describes the players of one video, but {len(files)} "
                             "inputs were given; separate one video at a time")
        if score is not None and model is None:  # the registry's score model, if it names one
            from ..checkpoint import role_model

            model = role_model("score")
        config = SeparatorConfig(wiener_iterations=iterations, overlap=overlap,
                                 batch_size=batch_size, precision=precision, residual=not raw,
                                 mix_floor=mix_floor)
        sep = Separator(model, device=device, config=config)
        if sep.device.type == "cpu":
            tune_cpu_allocator()  # a process-wide setting: the entry point's to make
        output = Output(out, filename, fmt, clip, force, bitrate)
        if boxes is not None:
            from .separate_video import separate_players

            separate_players(sep, files[0], boxes, instruments, detector, overlay, output)
            return
        outcomes: list[Outcome] = []
        guide = None
        if score is not None:
            codes, guide = _score_guide(sep, files[0], score, instruments, rest)
            codes_of = {files[0]: codes}
            shown = ", ".join(codes) + " (from the score)" + (" + rest" if rest else "")
        elif is_auto(instruments):
            codes_of = _detect_all(files, sep, detector, outcomes, span)
            shown = "auto"
        else:
            codes = sep.check_instruments(instruments)
            codes_of = {f: codes for f in files}
            shown = ", ".join(codes) + (" + rest" if rest else "")
        console.print(f"model [bold]{escape(model_label(sep))}[/] on [bold]{sep.device}[/] "
                      f"({sep.precision}), instruments {shown}, {len(codes_of)} file(s)",
                      soft_wrap=True)
        plan = {f: output.paths(f, stem_names(codes_of[f], rest)) for f in codes_of}
        _check_collisions(plan, filename)
        made_out = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CusepError(f"cannot create output folder '{out}' ({exc.strerror or exc}); "
                             "choose a writable --out") from None
        try:
            for f, paths in plan.items():
                existing = {c: p for c, p in paths.items() if p.exists()}
                if existing and not force:
                    outcomes.append(_skip(f, paths, existing, out))
                    continue
                outcome = _one(sep, f, codes_of[f], paths, output, rest, span, guide)
                outcomes.append(replace(outcome, stems=paths) if outcome.status == "ok"
                                else outcome)
        except KeyboardInterrupt:
            done = sum(o.status == "ok" for o in outcomes)
            console.print(f"interrupted: {done} of {len(plan)} input(s) separated and kept; "
                          "the stems of the input under way were not written", soft_wrap=True)
            raise typer.Exit(130) from None
        finally:
            if made_out:
                remove_empty(out, out.parent)
        wall = time.perf_counter() - began
        _summary(outcomes, wall)
        if as_json:
            settings = {"instruments": instruments, "rest": rest, "format": fmt,
                        "clip_mode": clip, "filename": filename, "out": str(out),
                        "force": force, **asdict(config)}
            print(json.dumps(run_record(sep, outcomes, wall, settings), indent=2))
        if any(o.status == "failed" for o in outcomes):
            raise typer.Exit(1)


def _skip(path: Path, paths: dict[str, Path], existing: dict[str, Path], out: Path) -> Outcome:
    """An input whose stems (some or all) exist: say which, skip it (the README's rule)."""
    names = ", ".join(_shown(p, out) for p in existing.values())
    missing = [_shown(p, out) for c, p in paths.items() if c not in existing]
    counted = f"{len(existing)} of {len(paths)} stems exist ({names})"
    also = f"; {', '.join(missing)} not written either" if missing else ""
    console.print(f"[yellow]skip[/] {escape(str(path))}: {escape(counted + also)}; use --force "
                  "to overwrite", soft_wrap=True)
    return Outcome(path, "skipped", counted, stems=dict(existing))


def _shown(path: Path, out: Path) -> str:
    try:
        return str(path.relative_to(out))
    except ValueError:
        return str(path)


def run_record(sep: Separator, outcomes: list[Outcome], wall: float,
               settings: dict[str, object]) -> dict[str, object]:
    """The ``--json`` summary: model, device, settings, one record per input and the totals."""
    model = {"name": sep.name, "label": model_label(sep),
             "path": str(sep.model_dir.path) if sep.model_dir else None,
             "source": sep.model_dir.source if sep.model_dir else "",
             "sha256": sep.model_dir.sha256 if sep.model_dir else None}
    inputs = [{"input": str(o.path), "status": o.status, "detail": o.detail,
               "stems": {code: str(p) for code, p in o.stems.items()},
               "audio_seconds": round(o.audio_seconds, 3), "seconds": round(o.seconds, 3)}
              for o in outcomes]
    return {"model": model, "device": str(sep.device), "precision": sep.precision,
            "settings": settings, "inputs": inputs, "totals": _totals(outcomes, wall)}


def _totals(outcomes: list[Outcome], wall: float) -> dict[str, float | int]:
    audio = sum(o.audio_seconds for o in outcomes)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    return {"files": len(outcomes), **counts, "audio_seconds": round(audio, 3),
            "wall_seconds": round(wall, 3),
            "real_time_factor": round(wall / audio, 4) if audio > 0 else None}


def _detect_all(files: list[Path], sep: Separator, detector: str | None,
                outcomes: list[Outcome], span: Span) -> dict[Path, tuple[str, ...]]:
    """Detect the instruments of every file (printing them with their confidences) -> the
    files with detections and their codes; the others become failed ``outcomes``. Raises when
    no file has any instrument, before anything is written."""
    from ..detect import Detector

    det = Detector(detector, device=sep.device)
    codes_of: dict[Path, tuple[str, ...]] = {}
    for path in files:
        try:
            audio, rate = span.read(path)
            result = det.detect(audio, rate)
        except (CusepError, OSError) as exc:
            outcomes.append(Outcome(path, "failed", file_failed(path, exc)))
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


def _score_guide(sep: Separator, path: Path, score: Path, instruments: str | None,
                 rest: bool) -> tuple[tuple[str, ...], ScoreGuide]:
    """Read ``score``, align it to the recording at ``path`` and say how well -> the score's
    instruments (checked against ``--instruments`` and the model) and its guide."""
    from ..align import aligned_score
    from ..score import read_score

    parsed = read_score(score)
    codes = tuple(dict.fromkeys(p.code for p in parsed.parts))
    if instruments is not None:
        named = sep.check_instruments(instruments)
        if set(named) != set(codes) and not (rest and set(named) <= set(codes)):
            raise CusepError(f"the score's parts are {', '.join(codes)} but --instruments "
                             f"names {', '.join(named)}; leave --instruments out to use the "
                             "score's")
        codes = named
    sep.check_instruments(codes)
    audio, rate = Span().read(path)
    aligned, alignment = aligned_score(parsed, audio, rate)
    console.print(f"score {escape(str(score))} aligned to {escape(str(path))}: confidence "
                  f"{alignment.confidence:.2f} (score {alignment.reference})", soft_wrap=True)
    return codes, sep.score_guide(aligned, codes)


def _check_collisions(plan: dict[Path, dict[str, Path]], template: str) -> None:
    """Refuse a plan in which two stems (of one input or of two) would go to the same file."""
    seen: dict[Path, Path] = {}
    for src, paths in plan.items():
        for p in paths.values():
            if p in seen and seen[p] == src:
                raise CusepError(f"--filename '{template}' gives every stem of '{src}' the same "
                                 f"path '{p}'; include {{stem}} in the template")
            if p in seen:
                hint = ("add {parent} (the input's folder), e.g. --filename "
                        "'{parent}/{track}/{stem}.{ext}'" if "{parent}" not in template
                        else "rename one of them")
                raise CusepError(f"'{src}' and '{seen[p]}' would both write '{p}'; {hint}")
            seen[p] = src


def _one(sep: Separator, path: Path, codes: tuple[str, ...], paths: dict[str, Path],
         output: Output, rest: bool, span: Span, guide: ScoreGuide | None = None) -> Outcome:
    """Separate one input (the ``span`` of it), streaming it from the file to the stems."""
    from ..audio import open_audio  # imports torch: only when a command runs

    start = time.perf_counter()
    try:
        source = open_audio(path)
        first, stop = span.frames(source)
        rate = source.sample_rate
        expected = max((source.frames or 0) if stop is None else stop, first) - first
        with claimed(paths.values(), output.folder), \
                file_progress(path.name, expected) as update:
            blocks = sep.iter_blocks(source.blocks(start=first, stop=stop), rate, codes,
                                     progress=update, rest=rest, total=expected,
                                     guide=guide)
            scale, frames = write_stems(blocks, paths, rate, source.channels, output)
    except (CusepError, OSError) as exc:
        return Outcome(path, "failed", file_failed(path, exc), time.perf_counter() - start)
    seconds = time.perf_counter() - start
    duration = frames / rate
    if scale != 1.0:
        console.print(f"[yellow]note:[/] stems of {escape(str(path))} exceed full scale (peak "
                      f"{1 / scale:.2f}): all divided by {1 / scale:.2f}, so they still sum to "
                      "the input at that level; --format float32 keeps the levels",
                      soft_wrap=True)
    console.print(f"[green]ok[/] {escape(str(path))} -> {escape(str(paths[codes[0]].parent))} "
                  f"({duration:.1f} s audio in {seconds:.1f} s, "
                  f"{duration / max(seconds, 1e-9):.0f}x real time)", soft_wrap=True)
    n = len(paths)
    return Outcome(path, "ok", f"{n} stem{'s' if n > 1 else ''}", seconds, duration)


def _summary(outcomes: list[Outcome], wall: float | None = None) -> None:
    """A table of the inputs (2 or more), then always one line of totals."""
    if len(outcomes) >= 2:
        table = Table(title="cusep separate")
        table.add_column("input", overflow="fold")  # a path is never cut short with an ellipsis
        for col in ("status", "detail", "audio (s)", "time (s)"):
            table.add_column(col)
        for o in outcomes:
            style = {"ok": "green", "skipped": "yellow", "failed": "red"}[o.status]
            table.add_row(escape(str(o.path)), f"[{style}]{o.status}[/]", escape(o.detail),
                          f"{o.audio_seconds:.1f}", f"{o.seconds:.1f}")
        console.print(table)
    console.print(totals_line(outcomes, wall), soft_wrap=True)


def totals_line(outcomes: list[Outcome], wall: float | None = None) -> str:
    """'total: 3 files (2 ok, 1 skipped, 0 failed), 61.2 s of audio in 20.4 s (real-time factor
    0.33)'; the factor is wall seconds per second of audio (below 1: faster than real time)."""
    t = _totals(outcomes, sum(o.seconds for o in outcomes) if wall is None else wall)
    rtf = f"real-time factor {t['real_time_factor']:.2f}" if t["real_time_factor"] is not None \
        else "real-time factor -"
    return (f"total: {t['files']} file{'s' if t['files'] != 1 else ''} ({t['ok']} ok, "
            f"{t['skipped']} skipped, {t['failed']} failed), {t['audio_seconds']:.1f} s of "
            f"audio in {t['wall_seconds']:.1f} s ({rtf})")
