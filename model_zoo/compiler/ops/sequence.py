"""Time-major sequence helpers shared by the recurrent layers.

Two layouts appear: rows [T, B, F] (time, batch, features), which the large matrix
products over all steps use, and feature-major [T, F, B], which the loops use (see
lstm_layer.py for why).
"""

from __future__ import annotations

from ..graph import GraphBuilder


def batch_size(g: GraphBuilder, x_rows: str) -> str:
    """int64 [1]: B of a rows sequence [T, B, F]."""
    return g.op("Slice", g.op("Shape", x_rows), g.ints(1), g.ints(2))


def zeros_rows(g: GraphBuilder, x_rows: str, size: int) -> str:
    """float32 zeros [B, size] for a rows sequence x [T, B, F]."""
    return g.op("ConstantOfShape", g.op("Concat", batch_size(g, x_rows), g.ints(size), axis=0))


def zeros_columns(g: GraphBuilder, x_rows: str, size: int) -> str:
    """float32 zeros [size, B] for a rows sequence x [T, B, F]."""
    return g.op("ConstantOfShape", g.op("Concat", g.ints(size), batch_size(g, x_rows), axis=0))


def shift_back(g: GraphBuilder, seq: str, first: str) -> str:
    """[first, seq[0], ..., seq[T-2]]: the previous-step values for every step."""
    head = g.op("Unsqueeze", first, g.ints(0))
    body = g.op("Slice", seq, g.ints(0), g.ints(-1), g.ints(0))
    return g.op("Concat", head, body, axis=0)


def to_rows(g: GraphBuilder, seq_fm: str, width: int) -> str:
    """feature-major [T, F, B] -> rows flattened to [T * B, F]."""
    return g.op("Reshape", g.op("Transpose", seq_fm, perm=[0, 2, 1]), g.ints(-1, width))


def sum_time_batch(g: GraphBuilder, a: str, b: str, width_a: int, width_b: int) -> str:
    """sum_t a_t^T b_t for a [T, B, width_a], b [T, B, width_b] -> [width_a, width_b]."""
    a2 = g.op("Reshape", a, g.ints(-1, width_a))
    b2 = g.op("Reshape", b, g.ints(-1, width_b))
    return g.op("Gemm", a2, b2, transA=1)
