"""``cusep detect``: which instruments play in each recording, with their probabilities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import CusepError
from ..instruments import BY_CODE
from .common import collect_inputs, detected_line, file_failed
from .options import device_option

if TYPE_CHECKING:  # torch loads when the command runs
    from ..detect import DetectionResult


def render_table(path: Path, result: DetectionResult) -> Table:
    """Every class with its probability over the whole recording, most probable first."""
    table = Table(title=escape(str(path)), caption=result.threshold_text())
    for col in ("", "instrument", "probability", ""):
        table.add_column(col)
    ranked = sorted(result.confidences().items(), key=lambda item: -item[1])
    cut = result.cutoffs()
    for code, prob in ranked:
        mark = "[green]*[/]" if prob > cut[code] else ""
        bar = "#" * int(round(prob * 20)) + (f" (> {cut[code]:.2f})" if result.per_class else "")
        table.add_row(mark, f"{code} ({BY_CODE[code].name})", f"{prob:.2f}", bar)
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def detect(
        inputs: list[Path] = typer.Argument(..., metavar="FILE_OR_FOLDER",
                                            help="Audio/video files or folders."),
        model: str = typer.Option(None, "--model", "-m",
                                  help="Detector name, directory or Hub id (default: registry's)."),
        threshold: float = typer.Option(None, "--threshold",
                                        help="Probability threshold (default: the model's)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (with per-window "
                                     "probabilities) instead of tables."),
        device: str = device_option(),
    ) -> None:
        """Detect which instruments play, with their probabilities.

        Probabilities over the whole recording, most probable first (and per window with
        --json)."""
        from ..audio import read_audio
        from ..detect import Detector

        files = collect_inputs(inputs)
        detector = Detector(model, device=device, threshold=threshold)
        out = Console(highlight=False)
        records, failed = [], False
        for path in files:
            try:
                audio, rate = read_audio(path)
                result = detector.detect(audio, rate)
            except (CusepError, OSError) as exc:
                failed = True
                detail = file_failed(path, exc, show=not as_json)
                if as_json:
                    records.append({"file": str(path), "error": detail})
                continue
            if as_json:
                records.append({"file": str(path), **result.to_dict()})
            else:
                out.print(render_table(path, result))
                out.print(detected_line(path, result), soft_wrap=True)
        if as_json:
            out.print_json(json.dumps({"detector": detector.name, "files": records}))
        if failed:
            raise typer.Exit(1)
