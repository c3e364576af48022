"""Row-wise arg-max with PyTorch's tie rule (the first maximal index), fast for wide rows.

ONNX Runtime's ArgMax walks a row one element at a time, several times slower than
ReduceMax on wide rows (docs/benchmarks.md). For wide rows the arg-max is taken in two
stages over blocks of b columns: the first block holding the row maximum (ArgMax over
the block maxima), then the first maximal index inside that block. Both stages pick first indices,
so the result is the first maximal index of the row, as torch.argmax returns.
"""

from __future__ import annotations

import math

from .graph import GraphBuilder

MIN_TWO_STAGE = 1024  # narrower rows: one ArgMax is as fast as the extra nodes


def block_size(width: int) -> int | None:
    """The divisor of `width` nearest its square root (at least 16), or None."""
    if width < MIN_TWO_STAGE:
        return None
    root = math.isqrt(width)
    for delta in range(root):
        for b in (root - delta, root + delta):
            if 16 <= b <= width // 16 and width % b == 0:
                return b
    return None


def argmax_rows(g: GraphBuilder, x: str, width: int) -> str:
    """x float32 [N, width] -> int64 [N, 1]: the first index of each row's maximum."""
    b = block_size(width)
    if b is None:
        return g.op("ArgMax", x, axis=1, keepdims=1)
    blocks = g.op("Reshape", x, g.ints(-1, width // b, b))
    block_max = g.op("ReduceMax", blocks, g.ints(2), keepdims=0)
    k = g.op("ArgMax", block_max, axis=1, keepdims=1)
    where = g.op("Expand", g.op("Unsqueeze", k, g.ints(2)), g.ints(1, 1, b))
    block = g.op("GatherElements", blocks, where, axis=1)
    j = g.op("ArgMax", block, axis=2, keepdims=0)
    return g.op("Add", g.op("Mul", k, g.const(b, "int64")), j)
