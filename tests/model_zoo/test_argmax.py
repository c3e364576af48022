"""The two-stage arg-max equals numpy's (and torch's) first-maximal-index rule."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from hypothesis import given, settings
from hypothesis import strategies as st

from model_zoo.compiler.argmax import argmax_rows, block_size
from model_zoo.compiler.graph import GraphBuilder

WIDTHS = [1024, 1031, 4096, 10000]  # 1031 is prime: the single-ArgMax fallback


def _session(width: int) -> ort.InferenceSession:
    g = GraphBuilder()
    x = g.add_input("x", "float32", ["n", width])
    g.add_output(g.identity(argmax_rows(g, x, width), "best"), "int64", ["n", 1])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        g.to_model("argmax").SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


SESSIONS = {width: _session(width) for width in WIDTHS}


def test_block_size_divides_the_width_or_falls_back():
    assert block_size(10000) == 100
    assert block_size(1031) is None
    assert block_size(80) is None  # narrow rows: one ArgMax


@settings(max_examples=40, deadline=None)
@given(
    width=st.sampled_from(WIDTHS),
    rows=st.integers(1, 5),
    levels=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_argmax_rows_is_the_first_maximal_index_with_ties(width, rows, levels, seed):
    # few distinct values, so most rows hold their maximum several times, across blocks
    x = np.random.default_rng(seed).integers(0, levels, (rows, width)).astype(np.float32)
    (best,) = SESSIONS[width].run(None, {"x": x})
    np.testing.assert_array_equal(best[:, 0], x.argmax(axis=1))
