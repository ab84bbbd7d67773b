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


def type_error(value: Any, hint: Any) -> str | None:
    """What is wrong with ``value`` for a field typed ``hint`` (None if it fits): numbers for
    float (ints too, never bools), ints for int, the listed values of a Literal, strings,
    booleans, lists for tuples (element by element), None where the hint allows it. Nested
    dataclasses and other hints are not checked here."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = [type_error(value, a) for a in args if a is not type(None)]
        return None if any(e is None for e in errors) else errors[0]
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"must be a number, got {value!r}"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"must be a whole number, got {value!r}"
    if hint is bool:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if hint is str:
        return None if isinstance(value, str) else f"must be a string, got {value!r}"
    if origin is typing.Literal:
        return None if value in args else (f"must be one of {', '.join(map(repr, args))}, "
                                           f"got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return f"must be a list, got {value!r}"
        if len(args) == 2 and args[1] is Ellipsis:
            items = [(v, args[0]) for v in value]
        elif args:
            if len(value) != len(args):
                return f"must be a list of {len(args)} values, got {value!r}"
            items = list(zip(value, args, strict=True))
        else:
            items = []
        for v, h in items:
            err = type_error(v, h)
            if err is not None:
                return f"must be a list of values that each {err.removeprefix('must ')}"
        return None
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
        elif nested is None and (err := type_error(value, hint)) is not None:
            raise ValueError(f"{what} config key '{key}' {err}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
