"""Dropout in train mode with a mask drawn from a counter-based hash of (seed, position).

ONNX's random operators take their seed as an attribute, fixed at export; a train step
needs a fresh mask per step, so the seed is a graph input and the mask is a pure function
of (seed, element index). `dropout_keep_mask` is the same function in numpy, so tests and
PyTorch references can reproduce a step exactly.
"""
from __future__ import annotations

import numpy as np

from .base import Op

_P = 2147483647  # 2^31 - 1: every product below stays under 2^62 in int64
_SALT = 1000003  # each dropout layer salts the seed so two layers never share a mask


def _hash_uniform(pos: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Uniform [0, 1) floats from int64 positions (two mixed Lehmer streams)."""
    s = np.int64((seed + salt * _SALT) % _P)
    a = (pos * 48271 + s) % _P
    a = (a * 16807) % _P
    b = (pos * 69621 + s * 7 + 1) % _P
    mixed = np.bitwise_xor(a, b)
    return ((mixed * 48271) % _P).astype(np.float32) / np.float32(_P)


def dropout_keep_mask(seed: int, shape: tuple[int, ...], p: float, salt: int = 0) -> np.ndarray:
    """The float32 keep mask (1 or 0) the graphs use for `seed` at dropout layer `salt`."""
    pos = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    return (_hash_uniform(pos, seed, salt) >= np.float32(p)).astype(np.float32)


class Dropout(Op):
    """y = x * mask / (1 - p) in training graphs; identity otherwise. `seed` is int64 []."""

    def __init__(self, p: float, seed_input: str, salt: int):
        self.p, self.seed_input, self.salt = p, seed_input, salt

    def forward(self, g, inputs, training):
        x = inputs[0]
        if not training or self.p == 0.0:
            self.scale = None
            return x
        shape = g.op("Shape", x)
        count = g.op("ReduceProd", shape, keepdims=1)
        pos = g.op("Reshape", g.op("Range", g.const(0, "int64"), g.op("Squeeze", count),
                                   g.const(1, "int64")), shape)
        seed = g.op("Mod", g.op("Add", self.seed_input, g.const(self.salt * _SALT, "int64")),
                    g.const(_P, "int64"))
        a = g.op("Mod", g.op("Add", g.op("Mul", pos, g.const(48271, "int64")), seed),
                 g.const(_P, "int64"))
        a = g.op("Mod", g.op("Mul", a, g.const(16807, "int64")), g.const(_P, "int64"))
        b = g.op("Mod", g.op("Add", g.op("Add", g.op("Mul", pos, g.const(69621, "int64")),
                                         g.op("Mul", seed, g.const(7, "int64"))),
                             g.const(1, "int64")), g.const(_P, "int64"))
        mixed = g.op("BitwiseXor", a, b)
        u = g.op("Div", g.op("Cast", g.op("Mod", g.op("Mul", mixed, g.const(48271, "int64")),
                                           g.const(_P, "int64")), to=1), g.const(float(_P)))
        keep = g.op("Cast", g.op("GreaterOrEqual", u, g.const(self.p)), to=1)
        self.scale = g.op("Mul", keep, g.const(1.0 / (1.0 - self.p)))
        return g.op("Mul", x, self.scale)

    def backward(self, g, grad_outputs, needs_grad):
        dy = grad_outputs[0]
        return [dy if self.scale is None else g.op("Mul", dy, self.scale)]
