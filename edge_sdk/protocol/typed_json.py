"""Typed JSON: frozen dataclasses built from JSON documents, checked field by field.

`from_json(cls, doc, path)` builds `cls` (a dataclass, possibly nested) from a decoded
JSON document and refuses, with the field's full path (`settings.plan.epochz`):

- keys the class does not have, naming the nearest valid key ("did you mean 'epochs'?");
- values of the wrong JSON type: a bool is not an int, an int is accepted for a float,
  a string is never a number;
- integers beyond +-2^63 and floats that are not finite;
- a value outside a `Literal[...]` (naming the nearest valid value);
- whatever the class's own `__post_init__` refuses (a `FieldError` there names the field
  relative to the class; any other ValueError is reported at the class's path).

`to_json(obj)` is the inverse: nested dataclasses become dicts, tuples become lists.

The supported annotations are bool, int, float, str, None, Literal[...], X | None (and
other unions, tried in order), list[X], tuple[X, ...], dict[str, X] and dataclasses;
`field(metadata={"aliases": ("old",)})` also accepts a key under an older name.
stdlib only: the SDK and the aggregator both use it.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from typing import Any, Literal, Union

from .errors import ProtocolError

INT_LIMIT = 2**63
SHOWN = 64  # characters of a sender's key or value quoted back in an error


class FieldError(ProtocolError):
    """A field of a JSON document (or of a config object) that cannot be used as given.
    `field` is its path ("settings.robust.trim"); the aggregator answers 400 with it."""

    code = "bad_field"

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.message, self.field = message, field
        self.details = {"field": field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def under(self, prefix: str) -> FieldError:
        """The same error, its path prefixed with the enclosing object's path."""
        if not prefix:
            return self
        return FieldError(self.message, f"{prefix}.{self.field}" if self.field else prefix)


def require(ok: bool, field: str, message: str) -> None:
    """For `__post_init__` checks: FieldError(message, field) unless ok."""
    if not ok:
        raise FieldError(message, field)


def nearest(name: str, choices) -> str:
    """' did you mean ...?' for the closest of `choices`, or the list of them."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name)[:SHOWN], choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid: {', '.join(repr(c) for c in sorted(choices))}"


def from_json(cls: type, doc: Any, path: str = "") -> Any:
    """An instance of dataclass `cls` from the JSON document `doc` (not mutated)."""
    if not isinstance(doc, dict):
        raise FieldError(f"must be an object, got {_kind(doc)}", path)
    fields, names, hints = _layout(cls)
    values: dict[str, Any] = {}
    for key, value in doc.items():
        where = _join(path, key)
        if key not in names:
            raise FieldError("unknown key" + nearest(key, fields), where)
        name = names[key]
        if name in values:
            raise FieldError(f"given twice (as {name!r} and an older name)", where)
        values[name] = convert(hints[name], value, where)
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise FieldError("required key missing", _join(path, name))
    try:
        return cls(**values)
    except FieldError as e:
        raise e.under(path) from None
    except (ValueError, TypeError) as e:
        raise FieldError(str(e), path) from None


def convert(tp: Any, value: Any, path: str) -> Any:
    """`value` checked (and converted: list -> tuple, int -> float) against annotation `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None) or tp is None:
        if value is not None:
            raise FieldError(f"must be null, got {_kind(value)}", path)
        return None
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return convert(option, value, path)
            except FieldError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise FieldError(f"must be one of {' | '.join(_name(a) for a in args)}, "
                         f"got {_kind(value)}", path)
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return value
        raise FieldError(f"unknown value {_short(repr(value))}" + nearest(value, args), path)
    if tp is bool:
        if not isinstance(value, bool):
            raise FieldError(f"must be true or false, got {_kind(value)}", path)
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise FieldError(f"must be an integer, got {_kind(value)}", path)
        if not -INT_LIMIT < value < INT_LIMIT:
            raise FieldError("integer out of range (|n| < 2^63)", path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(f"must be a number, got {_kind(value)}", path)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise FieldError("must be a finite number", path)
        return number
    if tp is str:
        if not isinstance(value, str):
            raise FieldError(f"must be a string, got {_kind(value)}", path)
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise FieldError(f"must be a list, got {_kind(value)}", path)
        item = args[0] if args else Any
        items = [convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise FieldError(f"must be an object, got {_kind(value)}", path)
        item = args[1] if args else Any
        return {k: convert(item, v, _join(path, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value, path)
    raise TypeError(f"typed_json cannot check annotation {tp!r} (at {path})")


def to_json(obj: Any) -> Any:
    """Dataclasses as dicts (field names as keys), tuples as lists; other values as they are."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    return obj


@functools.lru_cache(maxsize=256)
def _layout(cls: type) -> tuple[dict, dict, dict]:
    """(fields by name, field name by accepted key, type hints) of a dataclass."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = {alias: name for name, f in fields.items()
             for alias in f.metadata.get("aliases", ())} | {name: name for name in fields}
    return fields, names, typing.get_type_hints(cls)


def _short(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{_short(str(key))}" if path else _short(str(key))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


__all__ = ["FieldError", "convert", "from_json", "nearest", "require", "to_json"]
