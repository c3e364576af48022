"""Dropout in train mode with a mask drawn from a counter-based hash of (seed, position).

ONNX's random operators take their seed as an attribute, fixed at export; a train step
needs a fresh mask per step, so the seed is a graph input and the mask is a pure function
of (seed, element index). The hash is written once against a tiny arithmetic interface and
evaluated both as graph nodes and in numpy (`dropout_keep_mask`), so tests and PyTorch
references reproduce a step's masks exactly. It is a statistical hash, not a secure one.
"""

from __future__ import annotations

import numpy as np

from .base import Op

_P = 2147483647  # 2^31 - 1: every product below stays under 2^62 in int64
_SALT = 1000003  # each dropout layer salts the seed so two layers never share a mask


def _hash_uniform(ops, pos, seed):
    """Uniform [0, 1) from int64 positions and a seed, through `ops` (numpy or graph)."""
    add, mul, mod, xor, const = ops.add, ops.mul, ops.mod, ops.xor, ops.const
    p = const(_P)
    s = mod(add(mul(seed, const(48271)), const(11)), p)
    s = mod(mul(s, s), p)  # squaring mod p makes the hash nonlinear in the seed...
    a = mod(add(mul(pos, const(48271)), s), p)
    a = mod(mul(a, a), p)  # ...and in the position
    b = mod(add(mul(pos, const(69621)), add(mul(s, const(7)), const(1))), p)
    x = mod(add(mul(xor(a, b), const(16807)), s), p)
    return ops.to_unit(mod(mul(x, x), p))


class _NumpyOps:
    add, mul, mod, xor = (
        staticmethod(np.add),
        staticmethod(np.multiply),
        staticmethod(np.mod),
        staticmethod(np.bitwise_xor),
    )

    @staticmethod
    def const(v):
        return np.int64(v)

    @staticmethod
    def to_unit(x):
        return x.astype(np.float32) / np.float32(_P)


class _GraphOps:
    def __init__(self, g):
        self.g = g

    def add(self, a, b):
        return self.g.op("Add", a, b)

    def mul(self, a, b):
        return self.g.op("Mul", a, b)

    def mod(self, a, b):
        return self.g.op("Mod", a, b)

    def xor(self, a, b):
        return self.g.op("BitwiseXor", a, b)

    def const(self, v):
        return self.g.const(v, "int64")

    def to_unit(self, x):
        return self.g.op("Div", self.g.op("Cast", x, to=1), self.g.const(float(_P)))


def emit_keep_mask(g, x: str, seed_input: str, salt: int, p: float) -> str:
    """Graph nodes for the bool keep mask of x's shape: the seeded uniform at least p, as
    `dropout_keep_mask` computes it in numpy."""
    return g.op("GreaterOrEqual", seeded_uniform(g, x, seed_input, salt), g.const(float(p)))


def dropout_keep_mask(seed: int, shape: tuple[int, ...], p: float, salt: int = 0) -> np.ndarray:
    """The float32 keep mask (1 or 0) the graphs use for `seed` at dropout layer `salt`."""
    return (uniform_noise(seed, shape, salt) >= np.float32(p)).astype(np.float32)


def uniform_noise(seed: int, shape: tuple[int, ...], salt: int = 0) -> np.ndarray:
    """The float32 uniform [0, 1) numbers the graphs draw for `seed` at random op `salt`
    (torch.rand_like and friends; dropout compares them with p)."""
    pos = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    seed = np.int64((seed + salt * _SALT) % _P)
    return _hash_uniform(_NumpyOps, pos, seed)


def normal_noise(seed: int, shape: tuple[int, ...], salt: int = 0) -> np.ndarray:
    """The float32 standard normal numbers the graphs draw for `seed` at random op `salt`
    (torch.randn_like and friends): Box-Muller over the uniforms of salts `salt` and
    `salt + 1`, as `emit_normal` computes them."""
    u1 = uniform_noise(seed, shape, salt)
    u2 = uniform_noise(seed, shape, salt + 1)
    radius = np.sqrt(np.float32(-2.0) * np.log(np.float32(1.0) - u1))
    return (radius * np.cos(np.float32(2 * np.pi) * u2)).astype(np.float32)


def emit_normal(g, u1: str, u2: str) -> str:
    """Graph nodes for standard normals from two uniforms (Box-Muller; 1 - u1 is in
    (0, 1], so the logarithm is finite)."""
    radius = g.op("Sqrt", g.op("Mul", g.const(-2.0), g.op("Log", g.op("Sub", g.const(1.0), u1))))
    return g.op("Mul", radius, g.op("Cos", g.op("Mul", g.const(float(2 * np.pi)), u2)))


def seeded_uniform(
    g, like: str | None, seed_input: str, salt: int, shape: str | None = None
) -> str:
    """Uniform [0, 1) in the shape of `like` (or the int64 `shape`) from the step's seed
    and a salt per random op: the hash of each element's position (what uniform_noise
    computes in numpy)."""
    shape = g.op("Shape", like) if shape is None else shape
    count = g.op("ReduceProd", shape, keepdims=1)
    pos = g.op(
        "Reshape",
        g.op("Range", g.const(0, "int64"), g.op("Squeeze", count), g.const(1, "int64")),
        shape,
    )
    seed = g.op(
        "Mod", g.op("Add", seed_input, g.const(salt * _SALT, "int64")), g.const(_P, "int64")
    )
    return _hash_uniform(_GraphOps(g), pos, seed)


class Dropout(Op):
    """y = x * mask / (1 - p) in training graphs; identity otherwise. `seed` is int64 []."""

    def __init__(self, p: float, seed_input: str, salt: int):
        self.p, self.seed_input, self.salt = p, seed_input, salt

    def forward(self, g, inputs, training):
        x = inputs[0]
        if not training or self.p == 0.0:
            self.scale = None
            return x
        keep = g.op("Cast", emit_keep_mask(g, x, self.seed_input, self.salt, self.p), to=1)
        self.scale = g.op("Mul", keep, g.const(1.0 / (1.0 - self.p)))
        return g.op("Mul", x, self.scale)

    def backward(self, g, grad_outputs, needs_grad):
        dy = grad_outputs[0]
        return [dy if self.scale is None else g.op("Mul", dy, self.scale)]
