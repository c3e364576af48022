"""Typed JSON: frozen dataclasses checked field by field against parsed JSON, for the
messages (messages.py) and any other dataclass, e.g. the aggregator's settings.

`decode_value(kind, value, path)` checks a parsed JSON value strictly (types, ranges,
lengths, unknown keys) and raises BadField naming the field's path, e.g.
"enroll.public_key"; `encode_value` gives the JSON-ready form (None-valued optional fields
left out).

Field types: str, int, float, bool, bytes (base64 text), X | None, Literal[...],
list[X], tuple[X, Y], dict[str, X], dict[int, X] (keys are decimal text), dict (any JSON
object) and nested dataclasses. Ranges and lengths are JSON-schema keywords in the
field's metadata, `field(metadata={"minimum": 0})` or `bounded(minimum=0)`; an int
without a declared range is held to +-(2^53 - 1), the integers every JSON reader holds
exactly. A dataclass refuses unknown keys unless it sets `_open = True` (replies do, so
a newer server can add a field without breaking older devices).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from typing import Any, ClassVar, Literal

from .errors import BadField

__all__ = ["INDEX_MAX", "JSON_INT", "Message", "bounded", "decode_value", "encode_value",
           "parse_bounded_int", "type_hints"]

JSON_INT = 2**53 - 1
INDEX_MAX = 2**31 - 1  # object keys typed int: e.g. secure-aggregation device indices
_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
         "maxLength", "pattern", "minItems", "maxItems", "minProperties", "maxProperties"}


def bounded(default=dataclasses.MISSING, *, description: str | None = None, **schema):
    """A dataclass field with JSON-schema bounds (minimum, maxLength, pattern, ...)."""
    unknown = set(schema) - _KEYS
    if unknown:
        raise TypeError(f"unknown schema keywords {sorted(unknown)}; known: {sorted(_KEYS)}")
    metadata = dict(schema) | ({"description": description} if description else {})
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class Message:
    """The base of the JSON messages. `path` roots the field paths of errors."""

    path: ClassVar[str] = "message"
    _open: ClassVar[bool] = False

    @classmethod
    def from_json(cls, doc: Any, path: str | None = None):
        return decode_value(cls, doc, path or cls.path)

    def to_json(self) -> dict:
        return encode_value(self)

    def check(self, path: str) -> None:
        """Checks across fields (BadField at `path`, this message's place in the document);
        called by from_json after the fields."""


# -- the generic codec ------------------------------------------------------------------------
def decode_value(kind, value: Any, path: str, meta: typing.Mapping = {}):
    """`value` (parsed JSON) checked against the type `kind` and the schema keywords in
    `meta`; dataclasses are built field by field. Raises BadField at the first problem."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"only X | None unions are supported, not {kind}")
        return decode_value(inner[0], value, path, meta)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            raise BadField(path, f"must be one of {list(args)}")
        return value
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, value, path)
    if kind is bool:
        if not isinstance(value, bool):
            raise BadField(path, "must be true or false")
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadField(path, "must be an integer")
        _check_range(value, path, meta, -JSON_INT, JSON_INT)
        return value
    if kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value):
            raise BadField(path, "must be a finite number")
        _check_range(value, path, meta, None, None)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise BadField(path, "must be a string")
        _check_length(len(value), path, meta, "characters")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise BadField(path, f"must match {meta['pattern']}")
        return value
    if kind is bytes:
        if not isinstance(value, str):
            raise BadField(path, "must be base64 text")
        try:
            data = base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise BadField(path, "must be base64 text") from None
        _check_length(len(data), path, meta, "bytes")
        return data
    if kind is dict or origin is dict:
        if not isinstance(value, dict):
            raise BadField(path, "must be a JSON object")
        _check_count(len(value), path, meta, "minProperties", "maxProperties", "keys")
        if kind is dict:
            return dict(value)
        key_kind, item_kind = args
        return {_decode_key(key_kind, k, path): decode_value(item_kind, v, f"{path}.{k}")
                for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise BadField(path, "must be a JSON array")
        _check_count(len(value), path, meta, "minItems", "maxItems", "items")
        return [decode_value(args[0], v, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list) or len(value) != len(args):
            raise BadField(path, f"must be a JSON array of {len(args)} items")
        return tuple(decode_value(a, v, f"{path}.{i}") for i, (a, v) in enumerate(zip(args, value)))
    raise TypeError(f"{path}: no JSON form for {kind!r}")


def _decode_dataclass(cls, value: Any, path: str):
    if not isinstance(value, dict):
        raise BadField(path, "must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(value) - set(fields)
    if unknown and not getattr(cls, "_open", False):
        name = min(unknown)
        raise BadField(f"{path}.{name}", f"unknown field; known: {sorted(fields)}")
    hints = type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BadField(f"{path}.{name}", "is required")
            continue
        kwargs[name] = decode_value(hints[name], value[name], f"{path}.{name}", f.metadata)
    try:
        message = cls(**kwargs)
    except (TypeError, ValueError) as e:  # a dataclass that validates in __post_init__
        raise BadField(path, str(e)) from None
    if isinstance(message, Message):
        message.check(path)
    return message


def _decode_key(kind, key: str, path: str):
    if kind is str:
        return key
    if kind is int:
        return parse_bounded_int(key, f"{path}.{key[:20]}", 0, INDEX_MAX)
    raise TypeError(f"{path}: object keys are str or int, not {kind!r}")


def _check_range(value, path: str, meta, low, high) -> None:
    low = meta.get("minimum", low)
    high = meta.get("maximum", high)
    if low is not None and value < low or high is not None and value > high:
        raise BadField(path, f"must be in [{low}, {high}]")
    if "exclusiveMinimum" in meta and not value > meta["exclusiveMinimum"]:
        raise BadField(path, f"must be > {meta['exclusiveMinimum']}")
    if "exclusiveMaximum" in meta and not value < meta["exclusiveMaximum"]:
        raise BadField(path, f"must be < {meta['exclusiveMaximum']}")


def _check_length(n: int, path: str, meta, unit: str) -> None:
    _check_count(n, path, meta, "minLength", "maxLength", unit)


def _check_count(n: int, path: str, meta, low: str, high: str, unit: str) -> None:
    if n < meta.get(low, 0) or n > meta.get(high, n):
        most = meta.get(high, "any number of")
        raise BadField(path, f"must have {meta.get(low, 0)} to {most} {unit}")


def parse_bounded_int(text: str, path: str, low: int = 0, high: int = JSON_INT) -> int:
    """A query parameter or key: ASCII decimal digits only (no sign, no '²'), within
    [low, high]; BadField otherwise."""
    if not (isinstance(text, str) and 0 < len(text) <= len(str(high)) and text.isascii()
            and text.isdigit()):
        raise BadField(path, f"must be a decimal integer in [{low}, {high}]")
    value = int(text)
    if not low <= value <= high:
        raise BadField(path, f"must be a decimal integer in [{low}, {high}]")
    return value


def encode_value(value: Any) -> Any:
    """The JSON-ready form of a message or a value of a message's field."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.default is None:
                continue
            out[f.name] = encode_value(item)
        return out
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): encode_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    return value


_HINTS: dict[type, dict] = {}


def type_hints(cls) -> dict:
    """The resolved field types of a dataclass (cached)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints
