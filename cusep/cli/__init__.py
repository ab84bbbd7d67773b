"""The ``cusep`` command line: a thin Typer layer over the Python API.

Each sub-command lives in its own module exposing ``register(app)``; user errors
(:class:`cusep.errors.CusepError`) become one red line and exit code 1, never a traceback.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import CusepError

console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="cusep",
    help="Conditioned source separation for chamber music.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line (``message`` is plain text, never markup); return the Exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


class _WarningLine(logging.Handler):
    """cusep's logged warnings (e.g. a truncated input) as one yellow line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(f"[yellow]warning:[/] {escape(record.getMessage())}", soft_wrap=True)


def _show_warnings() -> None:
    logger = logging.getLogger("cusep")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        handler = _WarningLine(logging.WARNING)
        logger.addHandler(handler)
        logger.propagate = False


def _register_all() -> None:
    """Add every sub-command to ``app``, once (``main`` may be called many times in-process)."""
    if app.registered_commands or app.registered_groups:
        return
    from . import detect, eval, models, separate, synth, train

    for module in (separate, detect, models, synth, train, eval):
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cusep`` script and ``python -m cusep``."""
    _register_all()
    _show_warnings()
    try:
        app(args=argv, prog_name="cusep", standalone_mode=True)
    except CusepError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
