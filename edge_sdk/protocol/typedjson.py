"""Typed JSON: frozen dataclasses built from parsed JSON, checked field by field. The one
mechanism for the HTTP messages (messages.py), the aggregator's task settings and its
server config.

`decode_value(kind, value, path)` checks a parsed JSON value strictly and raises one
BadField (errors.py) naming every bad field with its full path (`settings.plan.epochz`,
`enroll.public_key`, `settings.server_lr_decay.at[1]`), so a sender fixes all at once;
it stops looking after BadField.LISTED of them (a hostile document costs no more):

- keys a dataclass does not have, naming the nearest valid key ("did you mean 'epochs'?"),
  unless the class sets `_open = True` (replies do, so a newer server can add a field
  without breaking older devices);
- values of the wrong JSON type: a bool is not an int, an int is accepted for a float,
  a string is never a number;
- numbers out of range: floats must be finite; ints must be within the field's declared
  range, or else within +-(2^53 - 1), the integers every JSON reader holds exactly;
- a value outside a `Literal[...]` (naming the nearest valid value);
- lengths, counts and patterns the field declares;
- whatever the class's own `__post_init__` refuses (a BadField there names the field
  relative to the class; any other ValueError or TypeError is reported at the class's
  path), then a Message's `check`. `Checks` collects a `__post_init__`'s refusals into
  one BadField. When some fields of a class fail to decode, its `__post_init__` still
  checks the others (built with the bad fields' defaults; what it says about the bad
  fields is dropped).

`encode_value(value)` is the inverse: dataclasses become dicts (None-valued fields whose
default is None left out), tuples lists, bytes base64 text.

Field types: Any, None, bool, int, float, str, bytes (base64 text), Literal[...],
X | None (and other unions, tried in order), list[X], tuple[X, ...], tuple[X, Y],
dict (any JSON object), dict[str, X], dict[int, X] (keys are decimal text) and nested
dataclasses. Field metadata holds JSON-schema bounds, `bounded(minimum=0)` (the OpenAPI
document publishes them), and `"aliases": ("old",)`, older names a key is accepted under.
stdlib only: the SDK and the aggregator both use it.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from dataclasses import field
from typing import Any, ClassVar, Literal

from .errors import BadField

__all__ = [
    "INDEX_MAX",
    "JSON_INT",
    "SCHEMA_KEYWORDS",
    "BadField",
    "Checks",
    "Message",
    "bounded",
    "decode_value",
    "encode_value",
    "nearest",
    "parse_bounded_int",
    "require",
    "type_hints",
]

JSON_INT = 2**53 - 1
INDEX_MAX = 2**31 - 1  # object keys typed int: e.g. secure-aggregation device indices
SHOWN = 64  # characters of a sender's key or value quoted back in an error
# the JSON-schema keywords a field may declare (`bounded`); the OpenAPI document copies them
SCHEMA_KEYWORDS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
)


def bounded(default=dataclasses.MISSING, *, description: str | None = None, **schema):
    """A dataclass field with JSON-schema bounds (minimum, maxLength, pattern, ...)."""
    unknown = set(schema) - set(SCHEMA_KEYWORDS)
    if unknown:
        raise TypeError(
            f"unknown schema keywords {sorted(unknown)}; known: {sorted(SCHEMA_KEYWORDS)}"
        )
    metadata = dict(schema) | ({"description": description} if description else {})
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def require(ok: bool, field: str, message: str) -> None:
    """For `__post_init__` checks: BadField(field, message) unless ok."""
    if not ok:
        raise BadField(field, message)


class Checks:
    """A `__post_init__`'s refusals, collected so that one BadField names every field:

        with Checks(self) as check:
            check.require(self.goal >= 1, "goal", "must be >= 1")
            if check.fine("low", "high"):  # across fields: once each one is fine
                check.require(self.low <= self.high, "low", "need low <= high")

    Leaving the block raises BadField.joined of what was refused. A BadField raised in
    the block joins them; so does a ValueError or TypeError once a check has failed (a
    later check tripping over an earlier bad value). `owner` (the object checked) lets
    the decoder say which fields hold a default in place of a value that failed to
    decode: those are never `fine`."""

    def __init__(self, owner: Any = None):
        self.errors: list[BadField] = []
        cls, defaulted = _DEFAULTED.get()
        self.defaulted = defaulted if owner is not None and type(owner) is cls else frozenset()

    def require(self, ok: bool, field: str, message: str) -> bool:
        """Refuse `field` with `message` unless ok; returns ok."""
        if not ok:
            self.errors.append(BadField(field, message))
        return bool(ok)

    def add(self, error: BadField, prefix: str = "") -> None:
        """Refusals made elsewhere (a nested object's), their paths under `prefix`."""
        self.errors.append(error.under(prefix))

    def fine(self, *fields: str) -> bool:
        """Whether none of `fields` (nor anything under them) was refused so far."""
        return not (
            self.defaulted.intersection(fields)
            or any(_root(e.field) in fields for e in self.errors)
        )

    def __enter__(self) -> Checks:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if isinstance(error, BadField):
            self.errors.append(error)
        elif error is not None and not (self.errors and isinstance(error, (ValueError, TypeError))):
            return False  # not ours to report
        if self.errors:
            raise BadField.joined(self.errors) from None
        return False


def _root(path: str) -> str:
    """The first name of a field path: "sync" of "sync.goal", "at" of "at[1]"."""
    return re.split(r"[.\[]", path, maxsplit=1)[0]


# (class, field names) while the decoder builds that class with defaults for those fields
_DEFAULTED: contextvars.ContextVar[tuple[type | None, frozenset]] = contextvars.ContextVar(
    "typedjson_defaulted", default=(None, frozenset())
)


class _Found:
    """The BadFields of one decoding, kept up to BadField.LISTED (then it stops)."""

    def __init__(self):
        self.errors: list[BadField] = []

    def add(self, error: BadField) -> None:
        self.errors.append(error)
        if self.full():
            self.raise_them()

    def full(self) -> bool:
        return sum(len(e.errors) for e in self.errors) >= BadField.LISTED or any(
            e.truncated for e in self.errors
        )

    def raise_them(self) -> None:
        if self.errors:
            raise BadField.joined(self.errors, truncated=self.full())


def nearest(name: Any, choices) -> str:
    """'; did you mean ...?' for the closest of `choices`, or the list of them."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name)[:SHOWN], choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid: {', '.join(repr(c) for c in sorted(choices))}"


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


# -- decoding ---------------------------------------------------------------------------------
def decode_value(kind, value: Any, path: str, meta: typing.Mapping = {}):
    """`value` (parsed JSON, not mutated) checked against the type `kind` and the schema
    keywords in `meta`; dataclasses are built field by field, lists become tuples where
    the type says tuple. Raises BadField at the first problem."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if kind is None or kind is type(None):
        if value is not None:
            raise BadField(path, f"must be null, got {_kind(value)}")
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return decode_value(option, value, path, meta)
            except BadField as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise BadField(
            path, f"must be one of {' | '.join(_name(a) for a in args)}, got {_kind(value)}"
        )
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return value
        raise BadField(path, f"unknown value {_short(repr(value))}" + nearest(value, args))
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, value, path)
    if kind is bool:
        if not isinstance(value, bool):
            raise BadField(path, f"must be true or false, got {_kind(value)}")
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadField(path, f"must be an integer, got {_kind(value)}")
        _check_range(value, path, meta, -JSON_INT, JSON_INT)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadField(path, f"must be a number, got {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise BadField(path, "must be a finite number")
        _check_range(number, path, meta, None, None)
        return number
    if kind is str:
        if not isinstance(value, str):
            raise BadField(path, f"must be a string, got {_kind(value)}")
        _check_count(len(value), path, meta, "minLength", "maxLength", "characters")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise BadField(path, f"must match {meta['pattern']}")
        return value
    if kind is bytes:
        if not isinstance(value, str):
            raise BadField(path, f"must be base64 text, got {_kind(value)}")
        try:
            data = base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise BadField(path, "must be base64 text") from None
        _check_count(len(data), path, meta, "minLength", "maxLength", "bytes")
        return data
    if kind is dict or origin is dict:
        if not isinstance(value, dict):
            raise BadField(path, f"must be an object, got {_kind(value)}")
        _check_count(len(value), path, meta, "minProperties", "maxProperties", "keys")
        if not args:
            return dict(value)
        key_kind, item_kind = args
        found, out = _Found(), {}
        for k, v in value.items():
            try:
                out[_decode_key(key_kind, k, path)] = decode_value(item_kind, v, _join(path, k))
            except BadField as e:
                found.add(e)
        found.raise_them()
        return out
    if kind in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list):
            raise BadField(path, f"must be a list, got {_kind(value)}")
        _check_count(len(value), path, meta, "minItems", "maxItems", "items")
        if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[X, Y]: fixed
            if len(value) != len(args):
                raise BadField(path, f"must be a list of {len(args)} items")
            return tuple(_decode_items(args, value, path))
        items = _decode_items([args[0] if args else Any] * len(value), value, path)
        return tuple(items) if tuple in (kind, origin) else items
    raise TypeError(f"{path}: no JSON form for {kind!r}")


def _decode_items(kinds, value: list, path: str) -> list:
    found, items = _Found(), []
    for i, (kind, v) in enumerate(zip(kinds, value)):
        try:
            items.append(decode_value(kind, v, f"{path}[{i}]"))
        except BadField as e:
            found.add(e)
    found.raise_them()
    return items


def _decode_dataclass(cls, doc: Any, path: str):
    if not isinstance(doc, dict):
        raise BadField(path, f"must be an object, got {_kind(doc)}")
    fields, names = _layout(cls)
    hints = type_hints(cls)
    found = _Found()
    given: dict[str, str] = {}  # field name: the key it was given under
    for key in doc:  # the keys first, in the document's order
        name = names.get(key)
        if name is None:
            if not getattr(cls, "_open", False):
                found.add(BadField(_join(path, key), "unknown key" + nearest(key, fields)))
        elif name in given:
            found.add(BadField(_join(path, key), f"given twice (as {name!r} and an older name)"))
        else:
            given[name] = key
    values: dict[str, Any] = {}
    bad: set[str] = set()  # fields whose value failed to decode or is missing
    for name, f in fields.items():  # then the values, in the class's order
        if name in given:
            where = _join(path, given[name])
            try:
                values[name] = decode_value(hints[name], doc[given[name]], where, f.metadata)
            except BadField as e:
                found.add(e)
                bad.add(name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            found.add(BadField(_join(path, name), "required key missing"))
            bad.add(name)
    if found.errors:
        _check_the_rest(cls, values, bad, path, found)
        found.raise_them()
    try:
        built = cls(**values)
    except BadField as e:  # a __post_init__ check names the field relative to the class
        raise e.under(path) from None
    except (ValueError, TypeError) as e:
        raise BadField(path, str(e)) from None
    if isinstance(built, Message):
        built.check(path)
    return built


def _check_the_rest(cls, values: dict, bad: set[str], path: str, found: _Found) -> None:
    """What `cls.__post_init__` says about the fields that did decode, built with the
    defaults of the `bad` ones (unless one has none); its words on those are dropped."""
    fields, _ = _layout(cls)
    if any(
        fields[name].default is dataclasses.MISSING
        and fields[name].default_factory is dataclasses.MISSING
        for name in bad
    ):
        return
    token = _DEFAULTED.set((cls, frozenset(bad)))
    try:
        cls(**values)
    except BadField as e:
        for error in e.errors:
            if _root(error.field) not in bad and error.field:
                found.add(error.under(path))
    except (ValueError, TypeError):
        pass  # a check tripping over a default in place of a bad value
    finally:
        _DEFAULTED.reset(token)


@functools.lru_cache(maxsize=256)
def _layout(cls: type) -> tuple[dict, dict]:
    """(init fields by name, field name by accepted key) of a dataclass."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = {
        alias: name for name, f in fields.items() for alias in f.metadata.get("aliases", ())
    } | {name: name for name in fields}
    return fields, names


@functools.lru_cache(maxsize=256)
def type_hints(cls) -> dict:
    """The resolved field types of a dataclass (cached)."""
    return typing.get_type_hints(cls)


def _decode_key(kind, key: str, path: str):
    if kind is str:
        return key
    if kind is int:
        return parse_bounded_int(key, _join(path, key), 0, INDEX_MAX)
    raise TypeError(f"{path}: object keys are str or int, not {kind!r}")


def _check_range(value, path: str, meta, low, high) -> None:
    low = meta.get("minimum", low)
    high = meta.get("maximum", high)
    if low is not None and value < low or high is not None and value > high:
        raise BadField(path, f"out of range, must be in [{low}, {high}]")
    if "exclusiveMinimum" in meta and not value > meta["exclusiveMinimum"]:
        raise BadField(path, f"must be > {meta['exclusiveMinimum']}")
    if "exclusiveMaximum" in meta and not value < meta["exclusiveMaximum"]:
        raise BadField(path, f"must be < {meta['exclusiveMaximum']}")


def _check_count(n: int, path: str, meta, low: str, high: str, unit: str) -> None:
    least, most = meta.get(low, 0), meta.get(high)
    if n < least or most is not None and n > most:
        if least == most:
            raise BadField(path, f"must have exactly {most} {unit}, not {n}")
        if most is None:
            raise BadField(path, f"must have at least {least} {unit}, not {n}")
        raise BadField(path, f"must have {least} to {most} {unit}, not {n}")


def parse_bounded_int(text: str, path: str, low: int = 0, high: int = JSON_INT) -> int:
    """A query parameter or key: ASCII decimal digits only (no sign, no '²'), within
    [low, high]; BadField otherwise."""
    if not (
        isinstance(text, str)
        and 0 < len(text) <= len(str(high))
        and text.isascii()
        and text.isdigit()
    ):
        raise BadField(path, f"must be a decimal integer in [{low}, {high}]")
    value = int(text)
    if not low <= value <= high:
        raise BadField(path, f"must be a decimal integer in [{low}, {high}]")
    return value


# -- encoding ---------------------------------------------------------------------------------
def encode_value(value: Any) -> Any:
    """The JSON-ready form of a dataclass or of a value of one's field."""
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


# -- quoting a sender's keys and values back, bounded -------------------------------------------
def _short(text: str) -> str:
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def _join(path: str, key: Any) -> str:
    return f"{path}.{_short(str(key))}" if path else _short(str(key))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _name(kind: Any) -> str:
    if kind is type(None):
        return "null"
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
