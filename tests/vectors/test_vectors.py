"""The Python encoder and decoder against the committed conformance vectors (every other
client is tested against the same files: clients/web/test/vectors.test.js)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.protocol import (
    CodecSpec,
    DecodeLimits,
    ErrorFeedback,
    ProtocolError,
    UpdateMeta,
    decode_parameters,
    decode_update,
    encode_parameters,
)

from . import generate
from .generate import tensors_from_hex as tensors

HERE = Path(__file__).resolve().parent
UPDATES = json.loads((HERE / "updates.json").read_text())
MODELS = json.loads((HERE / "models.json").read_text())
DAMAGED = json.loads((HERE / "damaged.json").read_text())
KEY = bytes.fromhex(UPDATES["private_key"])
PUBLIC = bytes.fromhex(UPDATES["public_key"])


def delta_of(case: dict) -> dict[str, np.ndarray]:
    if case["name"].startswith("tiny"):
        return tensors(UPDATES["tiny_delta"], case["specs"])
    if case["name"] == "error_feedback_round2":
        return tensors(UPDATES["second_delta"], case["specs"])
    return tensors(UPDATES["delta"], case["specs"])


def test_the_generator_writes_the_committed_files(tmp_path):
    generate.write(tmp_path)
    for name in ("updates.json", "models.json", "damaged.json"):
        assert (tmp_path / name).read_text() == (HERE / name).read_text(), (
            f"{name} changed: the wire format or an encoder changed; if on purpose, "
            "re-run tests/vectors/generate.py and say so in docs/protocol.md"
        )


def encode_case(case: dict, rng_seed: int, signing_key: bytes | None):
    """The case's delta and metadata encoded with its codec (and its error feedback, if it
    has one): (message, the feedback as the encoder left it, or None)."""
    feedback = None
    if "feedback_in" in case:
        feedback = ErrorFeedback(tensors(case["feedback_in"], case["specs"]))
    meta, codec = UpdateMeta(**case["meta"]), CodecSpec(**case["codec"])
    message = generate.encode_vector_update(
        delta_of(case), case["specs"], meta, codec, rng_seed, signing_key, feedback
    )
    return message, feedback


@pytest.mark.parametrize("case", UPDATES["cases"], ids=lambda c: c["name"])
def test_the_encoder_writes_the_vector_bytes(case):
    message, feedback = encode_case(case, case["rng_seed"], KEY if case["signed"] else None)
    assert message.hex() == case["message"]
    if feedback is not None:
        residual = {k: v.tobytes().hex() for k, v in feedback.residual.items()}
        assert residual == case["feedback_out"]


@pytest.mark.parametrize("case", UPDATES["cases"], ids=lambda c: c["name"])
def test_the_decoder_gives_the_vector_tensors(case):
    decoded = decode_update(
        bytes.fromhex(case["message"]), case["specs"], public_key=PUBLIC if case["signed"] else None
    )
    assert decoded.meta == UpdateMeta(**case["meta"])
    assert decoded.codec == CodecSpec(**case["codec"])
    expected = tensors(case["decoded"], case["specs"])
    for name, value in decoded.tensors.items():
        np.testing.assert_array_equal(value, expected[name])


@pytest.mark.parametrize(
    "case", [c for c in UPDATES["cases"] if c["byte_exact"]], ids=lambda c: c["name"]
)
def test_byte_exact_bodies_follow_from_the_seedless_rules(case):
    """A byte-exact codec's body does not depend on the encoder's rng: another seed gives
    the same body (only the header's seed differs)."""
    message, _ = encode_case(case, 12345, KEY)
    assert generate._raw_body(message).hex() == case["body"]


@pytest.mark.parametrize("case", MODELS["cases"], ids=lambda c: c["name"])
def test_model_vectors(case):
    message = encode_parameters(
        tensors(case["parameters"], case["specs"]),
        case["specs"],
        case["model_id"],
        case["model_version"],
        signing_key=KEY if case["signed"] else None,
    )
    assert message.hex() == case["message"]
    header, params = decode_parameters(
        message, case["specs"], public_key=PUBLIC if case["signed"] else None
    )
    assert header == {"model_id": case["model_id"], "model_version": case["model_version"]}
    assert {k: v.tobytes().hex() for k, v in params.items()} == case["parameters"]


@pytest.mark.parametrize("case", DAMAGED["cases"], ids=lambda c: c["name"])
def test_damaged_messages_give_their_error(case):
    data = bytes.fromhex(case["message"])
    limits = DecodeLimits(**case["limits"])
    public_key = bytes.fromhex(case["public_key"]) if case["public_key"] else None
    with pytest.raises(ProtocolError) as raised:
        if case["kind"] == "model":
            decode_parameters(data, case["specs"], public_key=public_key, limits=limits)
        else:
            decode_update(data, case["specs"], public_key=public_key, limits=limits)
    assert raised.value.code == case["error"], str(raised.value)


# errors of the JSON messages (edge_sdk.protocol.messages), not of the binary wire format
JSON_ERRORS = {"malformed_json", "json_limit", "bad_field"}


def test_every_error_code_has_a_damaged_vector():
    def descendants(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from descendants(sub)

    wire = {e.code for e in descendants(ProtocolError)} - JSON_ERRORS
    assert wire == {c["error"] for c in DAMAGED["cases"]}
