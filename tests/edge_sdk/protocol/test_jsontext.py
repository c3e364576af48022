from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_sdk.protocol import JsonLimitExceeded, MalformedJson, ProtocolError
from edge_sdk.protocol.jsontext import JsonLimits, parse_json

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=30,
)


@given(JSON)
def test_parse_json_agrees_with_json_loads_within_the_limits(doc):
    text = json.dumps(doc, ensure_ascii=False)
    assert parse_json(text.encode()) == json.loads(text)
    assert parse_json(text) == json.loads(text)


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_parse_json_raises_only_protocol_errors(data):
    try:
        parse_json(data)
    except ProtocolError:
        pass


@pytest.mark.parametrize("depth", [33, 1000, 500_000])
def test_nesting_beyond_the_depth_limit_is_refused_without_recursion(depth):
    for opener, closer in ((b"[", b"]"), (b'{"k":', b"}")):
        body = opener * depth + b"0" + closer * depth
        with pytest.raises(JsonLimitExceeded) as e:
            parse_json(body, JsonLimits(max_bytes=10 << 20))
        assert e.value.details == {"limit": "max_depth", "max": 32}


def test_nesting_at_the_limit_passes_and_brackets_in_strings_do_not_count():
    assert parse_json(b"[" * 32 + b"]" * 32) is not None
    assert parse_json(json.dumps(["[" * 1000, "{" * 1000, '\\"[[[[['])) == [
        "[" * 1000,
        "{" * 1000,
        '\\"[[[[[',
    ]


@pytest.mark.parametrize(
    "limit,body",
    [
        ("max_bytes", b"[" + b"0," * 600_000 + b"0]"),
        ("max_number_chars", b"1" * 33),
        ("max_number_chars", b"[-" + b"9" * 5000 + b"]"),
        ("max_number_chars", b"0." + b"1" * 40),
        ("max_string_chars", b'"' + b"a" * 65_537 + b'"'),
        ("max_string_chars", b'{"' + b"k" * 65_537 + b'": 1}'),
    ],
)
def test_each_limit_names_itself(limit, body):
    with pytest.raises(JsonLimitExceeded) as e:
        parse_json(body)
    assert e.value.details["limit"] == limit and e.value.code == "json_limit"


def test_numbers_up_to_the_limit_are_exact():
    assert parse_json(b"9" * 30) == int("9" * 30)
    assert parse_json(b"-1.5e-300") == -1.5e-300


@pytest.mark.parametrize(
    "body",
    [
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b"1e400",
        b"[-1e309]",
        b'"\\ud800"',
        b'{"\\udfff": 1}',
        b'["a\\udc00b"]',
        b"\xff",
        b"\xed\xa0\x80",
        b'"\xc0\xaf"',
        b'{"a": 1, "a": 2}',
        b"\xef\xbb\xbf{}",
        b"",
        b"[1,]",
        b'"abc',
        b'"a\\u0000"',
        b'{"\\u0000": 1}',
    ],
)
def test_non_json_and_non_strict_json_is_malformed(body):
    with pytest.raises(MalformedJson) as e:
        parse_json(body)
    assert not isinstance(e.value, JsonLimitExceeded)


def test_a_surrogate_pair_is_one_character():
    assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"


def test_text_input_is_limited_by_its_utf8_size():
    with pytest.raises(JsonLimitExceeded):
        parse_json('"' + "é" * 600 + '"', JsonLimits(max_bytes=1000))
    assert parse_json('"' + "é" * 400 + '"', JsonLimits(max_bytes=1000)) == "é" * 400


def test_limits_validate_when_built():
    with pytest.raises(ValueError, match="max_depth"):
        JsonLimits(max_depth=10_000)
    assert math.isfinite(parse_json(b"1e308"))
