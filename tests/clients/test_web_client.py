"""The web client (clients/web) under Node: its own test suite (the conformance vectors,
training in onnxruntime-web), and its updates decoded by the Python decoder."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.protocol import DEFAULT_CODEC, CodecSpec, UpdateMeta, decode_update

from ..vectors.generate import encode_vector_update
from ..vectors.generate import tensors_from_hex as _tensors
from .node import WEB, node_or_skip, run_tool

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
UPDATES = json.loads((VECTORS / "updates.json").read_text())
PUBLIC = bytes.fromhex(UPDATES["public_key"])


def test_node_test_suite_passes():
    node = node_or_skip()
    done = subprocess.run(
        [node, "--test", "test/"], cwd=WEB, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout


def _encode_with_js(case: dict, codec: CodecSpec, delta_key: str = "delta") -> bytes:
    job = {
        "delta": UPDATES[delta_key],
        "specs": case["specs"],
        "meta": case["meta"],
        "codec": codec.to_json(),
        "seed": str(json.loads(case["header"])["seed"]),
        "private_key": UPDATES["private_key"],
    }
    return bytes.fromhex(run_tool("encode_update.mjs", job)["message"])


def test_the_default_codec_from_js_decodes_in_python_next_to_pythons_own():
    """Stochastic rounding draws differ, so the bytes differ; the decoded deltas keep the
    same positions and lie within one quantization step of each other."""
    case = next(c for c in UPDATES["cases"] if c["name"] == "topk_blocks_int8_default")
    message = _encode_with_js(case, DEFAULT_CODEC)
    from_js = decode_update(message, case["specs"], public_key=PUBLIC)
    assert from_js.codec == DEFAULT_CODEC
    assert from_js.meta == UpdateMeta(**case["meta"])
    from_python = _tensors(case["decoded"], case["specs"])
    delta = _tensors(UPDATES["delta"], case["specs"])
    for name, value in from_js.tensors.items():
        np.testing.assert_array_equal(value != 0, from_python[name] != 0)
        kept = value != 0
        scale = np.abs(delta[name][kept]).max()
        assert np.abs(value - from_python[name]).max() <= 2 / 254 * scale * 1.0001
        # unbiased rounding: each kept value within one step of the true delta
        assert np.abs(value[kept] - delta[name][kept]).max() <= 2 / 254 * scale * 1.0001
    # the server's path: keep_parts, a joined int8 body
    parts = decode_update(message, case["specs"], public_key=PUBLIC, keep_parts=True)
    assert set(parts.tensors) == {s["name"] for s in case["specs"]}


@pytest.mark.parametrize("name", ["topk_blocks_int8_nearest", "int4_nearest", "float16"])
def test_js_and_python_encoders_write_the_same_update(name):
    case = next(c for c in UPDATES["cases"] if c["name"] == name)
    message = _encode_with_js(case, CodecSpec(**case["codec"]))
    assert message.hex() == case["message"]
    python = encode_vector_update(
        _tensors(UPDATES["delta"], case["specs"]),
        case["specs"],
        UpdateMeta(**case["meta"]),
        CodecSpec(**case["codec"]),
        case["rng_seed"],
        bytes.fromhex(UPDATES["private_key"]),
    )
    assert python == message
