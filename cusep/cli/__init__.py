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
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_line() -> str:
    from .. import __version__

    return f"cusep {__version__}"


def _print_version(value: bool) -> None:
    if value:
        print(_version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print cusep's version and exit."),
) -> None:
    """Conditioned source separation for chamber music."""


@app.command("version")
def version_cmd() -> None:
    """Print cusep's version."""
    print(_version_line())


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
    if app.registered_groups:  # the models and eval groups: everything is registered
        return
    from . import align, detect, eval, models, separate, synth, train

    for module in (separate, detect, align, models, synth, train, eval):
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
