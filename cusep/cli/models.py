"""``cusep models list``: the models of the registry, with where they live and how they score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ..checkpoint import default_registry, list_models
from ..instruments import CODES


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to ``app``."""
    models_app = typer.Typer(help="Registered models: separators and instrument detectors.",
                             no_args_is_help=True)

    @models_app.command("list")
    def list_cmd(
        registry: Path | None = typer.Option(
            None, "--registry", help="registry.json (or its folder); default: the shipped one."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List the registered separators and detectors.

        Name, source, size, instruments, conditioning (a detector's is "-") and key metric."""
        rows = list_models(registry)
        console = Console(highlight=False)
        if as_json:
            console.print_json(json.dumps(rows))
            return
        if not rows:
            where = registry or default_registry() or "no registry.json found"
            console.print(f"no models registered ({where})")
            return
        console.print(render_table(rows))

    app.add_typer(models_app, name="models")


def render_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of :func:`cusep.checkpoint.list_models` rows."""
    table = Table(title="cusep models", caption="* default")
    table.add_column("name", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("instruments")
    table.add_column("conditioning")
    table.add_column("key metric", overflow="fold")
    for row in rows:
        name = f"{row['name']} *" if row["default"] else row["name"]
        size = f"{row['size_mb']:.1f} MB" if row["size_mb"] is not None else "not cached"
        instruments = row["instruments"] or []
        instruments = ("all 13" if tuple(instruments) == CODES
                       else " ".join(instruments) or "-")
        table.add_row(name, _short_source(row["source"]), size, instruments,
                      row["conditioning"] or "-", key_metric(row["metrics"]))
    return table


def key_metric(metrics: dict[str, Any]) -> str:
    """``name=value`` of the headline metric: a held-out test SI-SDR improvement or mAP first,
    then validation ones, then any SDR-like number, else the first number."""
    numbers = [(k, v) for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return "-"
    for pattern in ("si_sdri", "map", "si_sdr", "sdr"):
        for prefix in ("test", "valid", ""):
            for key, value in numbers:
                name = key.lower()
                if pattern in name.split("_", 1)[-1] and name.startswith(prefix) \
                        and "minus" not in name:
                    return f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
    key, value = numbers[0]
    return f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"


def _short_source(source: str) -> str:
    """Hub ids with a 7-character revision; local paths relative to the working dir if below it."""
    repo, at, revision = source.partition("@")
    if at and not Path(source).exists():
        return f"{repo}@{revision[:7]}"
    try:
        return str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        return source
