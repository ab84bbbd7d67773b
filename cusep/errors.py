"""User-facing errors: each carries one line that names the problem and the fix."""

from __future__ import annotations


class CusepError(Exception):
    """An error caused by the user's input or environment, shown as one line without traceback."""
