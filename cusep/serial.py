"""Frozen dataclass configs from JSON-like dicts (the inverse of ``dataclasses.asdict``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def optional_dataclass(hint: Any) -> type | None:
    """The dataclass of a ``SomeConfig | None`` hint (or of ``SomeConfig`` itself), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        if len(found) == 1 and type(None) in typing.get_args(hint):
            return found[0]
    return None


def dataclass_from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """Build ``cls`` from ``data``: nested dataclass fields recursively, lists as tuples where
    the field is a tuple. Unknown keys raise ValueError naming ``what``."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {what} config keys: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        nested = optional_dataclass(hint)
        if nested is not None and isinstance(value, dict):
            value = dataclass_from_dict(nested, value, key)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
