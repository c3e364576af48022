"""JSON text parsed within limits: size, nesting depth, string length and number length
are checked before (or while) any Python object is built, so hostile input costs at most
a linear scan and never reaches json's recursion, int()'s digit limit or a float overflow.

Strict: UTF-8 only (whatever charset a request claims), no NaN/Infinity literals, no
number that overflows a float, no lone surrogate (escaped or not), no U+0000 in a string,
no duplicate key.
Every failure is a MalformedJson (or its JsonLimitExceeded) with a stable code.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import JsonLimitExceeded, MalformedJson

__all__ = ["JsonLimits", "parse_json"]

# a string literal, to its closing quote or the end of the text: it always matches, so a
# substitution over the text is one linear pass (an unterminated string is json's to refuse)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_OPEN = np.frombuffer(b"[{", np.uint8)


@dataclass(frozen=True)
class JsonLimits:
    """max_bytes: of the UTF-8 text; max_depth: of nested arrays/objects; max_string_chars:
    of any string, keys included, after unescaping; max_number_chars: of a number literal
    (a 30-digit integer fits, a 5,000-digit one does not)."""

    max_bytes: int = 1 << 20
    max_depth: int = 32
    max_string_chars: int = 1 << 16
    max_number_chars: int = 32

    def __post_init__(self):
        if self.max_bytes < 2 or self.max_string_chars < 1 or self.max_number_chars < 1:
            raise ValueError("max_bytes must be >= 2, max_string_chars and max_number_chars >= 1")
        if not 1 <= self.max_depth <= 200:
            raise ValueError(
                "max_depth must be in 1..200 (json recursion stays far below Python's limit)"
            )


def parse_json(
    data: bytes | bytearray | memoryview | str, limits: JsonLimits = JsonLimits()
) -> Any:
    """The value of JSON text `data` (bytes are decoded as strict UTF-8); the input is not
    mutated. Raises JsonLimitExceeded (details: limit, max) or MalformedJson."""
    if isinstance(data, str):
        if len(data) > limits.max_bytes:  # characters <= bytes: a cheap first check
            _over("max_bytes", limits.max_bytes)
        text = data
        size = len(text.encode("utf-8", "surrogatepass"))
    else:
        size = len(data)
        if size > limits.max_bytes:
            _over("max_bytes", limits.max_bytes)
        try:
            text = bytes(data).decode("utf-8")  # strict: no surrogates, no overlong forms
        except UnicodeDecodeError:
            raise MalformedJson("the body must be UTF-8 encoded JSON") from None
    if size > limits.max_bytes:
        _over("max_bytes", limits.max_bytes)
    _check_depth(text, limits.max_depth)
    try:
        value = json.loads(
            text,
            parse_int=_number(limits, int),
            parse_float=_number(limits, float),
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except json.JSONDecodeError as e:
        raise MalformedJson(f"not JSON: {e.msg} at character {e.pos}") from None
    except RecursionError:  # unreachable after the depth check; never a 500 if it were
        _over("max_depth", limits.max_depth)
    _check_strings(value, limits.max_string_chars)
    return value


def _over(limit: str, maximum: int):
    raise JsonLimitExceeded(
        f"the JSON is over its {limit} limit of {maximum}", limit=limit, max=maximum
    )


def _check_depth(text: str, max_depth: int) -> None:
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if len(brackets) <= max_depth:
        return
    codes = np.frombuffer(brackets.encode("ascii"), np.uint8)
    depth = np.cumsum(np.where(np.isin(codes, _OPEN), 1, -1), dtype=np.int64)
    if depth.max() > max_depth:
        _over("max_depth", max_depth)


def _number(limits: JsonLimits, kind):
    def parse(literal: str):
        if len(literal) > limits.max_number_chars:
            _over("max_number_chars", limits.max_number_chars)
        value = kind(literal)
        if kind is float and not math.isfinite(value):
            raise MalformedJson(f"the number {literal} overflows a float")
        return value

    return parse


def _constant(name: str):
    raise MalformedJson(f"{name} is not JSON; numbers must be finite")


def _object(pairs: list[tuple[str, Any]]) -> dict:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise MalformedJson(f"the key {key!r} appears twice in one object")
    return doc


def _check_strings(value: Any, max_chars: int) -> None:
    """Every string (keys too) within max_chars and free of lone surrogates; iterative, so
    the walk itself never recurses."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_string(item, max_chars)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_string(key, max_chars)
                stack.append(child)


def _check_string(text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        _over("max_string_chars", max_chars)
    if "\x00" in text:  # valid JSON, but no text column (PostgreSQL) can hold it
        raise MalformedJson("a string holds U+0000, which is refused")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedJson(
                "a string holds a lone surrogate (not a Unicode character)"
            ) from None
