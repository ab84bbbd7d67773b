"""The ``cusep`` command line: a thin Typer layer over the Python API.

Each sub-command lives in its own module exposing ``register(app)``; user errors
(:class:`cusep.errors.CusepError`) become one red line and exit code 1, never a traceback.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

from ..errors import CusepError
from .common import console, fail


class _HelpTypes:
    """Help without type tags that mislead: a flag shows none (it takes no value, where Typer
    writes ``<bool>``) and an argument with a metavar shows only that (not ``<list[Path]>``)."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            if isinstance(param, TyperArgument) and param.metavar is not None:
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
        return params


class Command(_HelpTypes, TyperCommand):
    """Every cusep command (set by ``_register_all``)."""


class Group(_HelpTypes, TyperGroup):
    """The ``cusep`` group and its sub-groups (``models``, ``eval``)."""


app = typer.Typer(
    name="cusep",
    help="Conditioned source separation for chamber music.",
    cls=Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_line() -> str:
    from ..version import __version__

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
    """Add every sub-command to ``app``, once (``main`` may be called many times in-process).

    The command modules import torch, the models and the metrics only inside the commands that
    run them, so ``--help``, ``--version``, ``models list`` and argument errors start fast."""
    if app.registered_groups:  # the models and eval groups: everything is registered
        return
    from . import align, detect, eval, models, separate, synth, train

    for module in (separate, detect, align, models, synth, train, eval):
        module.register(app)
    _use_classes(app)


def _use_classes(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        info.cls = Command
    for group in typer_app.registered_groups:
        group.typer_instance.info.cls = Group
        _use_classes(group.typer_instance)


def _usage_error(exc: Exception, args: list[str]) -> int:
    """A Click usage error (an unknown option, a value not among the choices) as one line
    naming the fix, instead of Click's usage block and box; exit code 1 like every cusep error.

    A value outside an option's choices reads ``unknown --format 'ogg'; one of wav16, ...``."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "cusep"
    param = getattr(exc, "param", None)
    desc = getattr(param, "type_descriptor", None)
    if desc is not None and desc.is_choice:
        name = max((o for o in param.opts if o.startswith("--")), key=len,  # type: ignore[union-attr]
                   default=param.opts[0])  # type: ignore[union-attr]
        value = _value_of(param.opts, args)  # type: ignore[union-attr]
        if value is not None:
            fail(f"unknown {name} '{value}'; one of {', '.join(map(str, desc.choices))}")
            return 1
    message = exc.format_message().rstrip(".")  # type: ignore[attr-defined]
    message = message.replace("Value error, ", "")
    fail(f"{message}; see '{where} --help'")
    return 1


def _value_of(opts: list[str], args: list[str]) -> str | None:
    """The last value given to an option (``--opt v``, ``--opt=v``, ``-o v``) in ``args``."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(f"{opt}=") and opt.startswith("--"):
                found = arg[len(opt) + 1:]
    return found


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cusep`` script and ``python -m cusep``."""
    _register_all()
    _show_warnings()
    try:
        code = app(args=argv, prog_name="cusep", standalone_mode=False)
    except CusepError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except typer.Abort:
        console.print("aborted")
        sys.exit(1)
    except typer.TyperException as exc:  # Click's usage errors (Exit is handled by Click)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `cusep`, `cusep models`: help shown
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        sys.exit(_usage_error(exc, list(sys.argv[1:] if argv is None else argv)))
    sys.exit(code if isinstance(code, int) else 0)
