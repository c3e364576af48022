"""Forms the compiler picks for speed compute what the slower forms did: BatchNorm's affine
as one BatchNormalization node is bit for bit x * alpha + beta, embedding rows added by
ScatterElements take their additions in order like ScatterND, and the cross-entropy
gradient's scatter keeps a named row dimension so ONNX Runtime can run it in place."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model_zoo.compiler.aten.nn import _affine
from model_zoo.compiler.gradients import add_rows
from model_zoo.compiler.graph import GraphBuilder
from model_zoo.zoo import build_bundle


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return sess.run(None, feeds)


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 9), (2, 6, 5, 5)])
def test_batchnorm_affine_node_equals_mul_then_add_bit_for_bit(shape):
    """PyTorch's CPU kernel rounds x * alpha, then + beta (no fused multiply-add); the
    BatchNormalization node with mean 0, variance 0 and epsilon 1 must round the same."""
    rng = np.random.default_rng(0)
    channels = shape[1]
    g = GraphBuilder()
    x = g.add_input("x", "float32", list(shape))
    invstd, mean, w, b = (g.add_input(n, "float32", [channels]) for n in "imwb")
    g.add_output(g.identity(_affine(g, x, invstd, mean, w, b, len(shape)), "y"), "float32")
    feeds = {
        "x": (rng.standard_normal(shape) * 3).astype(np.float32),
        "i": rng.uniform(0.1, 5, channels).astype(np.float32),
        "m": rng.standard_normal(channels).astype(np.float32),
        "w": rng.standard_normal(channels).astype(np.float32),
        "b": rng.standard_normal(channels).astype(np.float32),
    }
    (y,) = _run(g.to_model("affine"), feeds)
    alpha = feeds["i"] * feeds["w"]
    beta = feeds["b"] - feeds["m"] * alpha
    at = (slice(None),) + (None,) * (len(shape) - 2)
    expected = feeds["x"] * alpha[at] + beta[at]  # numpy: two float32 roundings
    assert np.array_equal(y, expected)


@pytest.mark.parametrize("rank", [2, 3])
def test_rows_added_in_order_with_repeated_ids(rank):
    """Repeated ids add up in the order of the rows, as np.add.at and ScatterND do, bit
    for bit (float32 sums depend on the order)."""
    rng = np.random.default_rng(1)
    rest = [5] if rank == 2 else [3, 4]
    g = GraphBuilder()
    total = g.add_input("total", "float32", [7, *rest])
    ids = g.add_input("ids", "int64", ["k", 1])
    updates = g.add_input("updates", "float32", ["k", *rest])
    g.add_output(g.identity(add_rows(g, total, ids, updates, rank), "y"), "float32")
    feeds = {
        "total": rng.standard_normal((7, *rest)).astype(np.float32),
        "ids": np.array([[3], [0], [3], [6], [3], [0]], np.int64),
        "updates": (rng.standard_normal((6, *rest)) * 1e3).astype(np.float32),
    }
    (y,) = _run(g.to_model("rows"), feeds)
    expected = feeds["total"].copy()
    np.add.at(expected, feeds["ids"][:, 0], feeds["updates"])
    assert np.array_equal(y, expected)


def test_cross_entropy_scatter_input_has_a_named_row_dimension(tmp_path):
    """[B, T, C] logits are flattened with a Reshape to [-1, C]: without a name for the
    rows, ONNX Runtime cannot prove the scatter's input and output the same size and
    copies the [B*T, C] probabilities instead of updating them in place."""
    for name in ("keyboard_cifg_tiny", "keyboard_transformer_tiny"):
        graph = onnx.load(build_bundle(name, tmp_path / name) / "train_step.onnx").graph
        hints = {v.name: v.type.tensor_type.shape for v in graph.value_info}
        scatters = [  # the target column into the probabilities (embedding rows: axis 0)
            n
            for n in graph.node
            if n.op_type == "ScatterElements" and onnx.helper.get_node_attr_value(n, "axis") == 1
        ]
        assert scatters, name
        for node in scatters:
            dims = hints[node.input[0]].dim
            assert dims[0].dim_param.startswith("logit_rows"), name
            assert dims[1].dim_value > 0, name
