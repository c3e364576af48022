"""The interface every lowering implements: forward nodes, then the vector-Jacobian product.

An `Op` is made for one traced call. `forward` emits ONNX nodes for the call and keeps
whatever its backward needs on the instance (it is used once). `backward` receives the
gradient of each output leaf (None where nothing flows back) and returns the gradient of
each input (None where `needs_grad` is False or nothing flows).

Gradients are tensor names or, where that saves passes over large tensors, the factored
forms of `gradients.py`; an input's gradient may also be a list of terms to be summed.
`backward` receives factored gradients only of the kinds in `structured_gradients`
(others arrive written out).
"""

from __future__ import annotations

from ..graph import GraphBuilder


class UnsupportedError(NotImplementedError):
    """A layer, function or setting the compiler cannot lower; the message says which."""


class Op:
    structured_gradients: tuple[type, ...] = ()

    def forward(self, g: GraphBuilder, inputs: list[str], training: bool):
        raise NotImplementedError

    def backward(
        self, g: GraphBuilder, grad_outputs: list[str | None], needs_grad: list[bool]
    ) -> list[str | None]:
        raise NotImplementedError


def flatten_last(g: GraphBuilder, x: str, last: int) -> str:
    """Reshape x [..., last] to [N, last]."""
    return g.op("Reshape", x, g.ints(-1, last))


def add_all(g: GraphBuilder, terms: list[str]) -> str:
    return terms[0] if len(terms) == 1 else g.op("Sum", *terms)
