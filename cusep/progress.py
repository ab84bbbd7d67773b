"""cusep's one progress-bar layout (rich): what, bar, done/total or percent, extras, times."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(*extra: ProgressColumn, count: bool = True, **options: Any) -> Progress:
    """A rich Progress: description, bar, ``done/total`` (``count``) or a percentage, the
    ``extra`` columns, elapsed and remaining time. ``options`` go to ``Progress`` (console,
    transient, disable, ...)."""
    done = MofNCompleteColumn() if count else TextColumn("{task.percentage:>3.0f}%")
    return Progress(TextColumn("{task.description}"), BarColumn(), done, *extra,
                    TimeElapsedColumn(), TimeRemainingColumn(), **options)
