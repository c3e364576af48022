"""Walk a captured FX graph and emit ONNX through one registry: ATen op -> lowering.

Each FX node's value becomes an ONNX tensor name (or a tuple of names for multi-output
ops). Symbolic sizes (SymInt nodes: `sym_size`, and Python arithmetic on them) become
int64 scalar tensors computed from `Shape`, so batch and sequence stay dynamic; a list
of sizes becomes a 1-D int64 tensor (`Lowering.sizes`). Anything without a lowering is
refused with `UnsupportedError` naming the ATen op, the module path and the source line.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import fx

from ..graph import GraphBuilder
from ..ops.base import UnsupportedError

LOWERINGS: dict[object, Callable] = {}
# ATen ops that capture keeps whole instead of decomposing them into core ATen: their
# lowering is one fused pass where the decomposition makes several (see `keeps`)
KEPT: set[object] = set()

ONNX_TYPES = {
    torch.float32: 1,
    torch.uint8: 2,
    torch.int8: 3,
    torch.int16: 5,
    torch.int32: 6,
    torch.int64: 7,
    torch.bool: 9,
    torch.float16: 10,
    torch.float64: 11,
}


def lowers(*targets):
    """Register the decorated function as the lowering of `targets` (ATen overloads or
    Python callables such as operator.mul on sizes): fn(ctx, node, *args) -> value."""

    def register(fn):
        for target in targets:
            LOWERINGS[target] = fn
        return fn

    return register


def keeps(*targets):
    """Like `lowers`, for ops that core ATen would decompose: capture keeps them whole so
    that this lowering (fewer passes over large tensors, PyTorch's rounding) is used."""

    def register(fn):
        KEPT.update(targets)
        return lowers(*targets)(fn)

    return register


def op_name(target) -> str:
    return (
        str(target)
        if isinstance(target, torch._ops.OpOverload)
        else getattr(target, "__name__", str(target))
    )


class Lowering:
    """What a lowering may ask: resolved arguments, dtypes and ranks, scalar tensors, sizes.

    seed: the int64 [] graph input that seeds random ops (dropout masks), or None when
    the graph must not draw random numbers.
    """

    def __init__(self, g: GraphBuilder, seed: str | None = None):
        self.g = g
        self.env: dict[fx.Node, object] = {}
        self.types: dict[str, torch.dtype] = {}
        self.seed = seed
        self.random_ops = 0
        self.symbols: dict[str, tuple[str, int]] = {}  # size symbol -> (graph input, dim)
        self.layers: dict[tuple, object] = {}  # recurrent layers, for their backward

    # -- arguments ----------------------------------------------------------------------
    def args(self, node: fx.Node) -> list:
        """The node's arguments in schema order with defaults filled in, FX nodes
        replaced by their values."""
        target = node.target
        values = list(node.args)
        schema = getattr(target, "_schema", None)
        if schema is not None:
            for arg in schema.arguments[len(values) :]:
                default = arg.default_value if arg.has_default_value() else None
                values.append(node.kwargs.get(arg.name, default))
        return [self.resolve(v) for v in values]

    def resolve(self, value):
        if isinstance(value, fx.Node):
            return self.env[value]
        if isinstance(value, (list, tuple)):
            return type(value)(self.resolve(v) for v in value)
        return value

    def dtype(self, node: fx.Node) -> torch.dtype:
        v = node.meta["val"]
        return v.dtype if isinstance(v, torch.Tensor) else _sym_dtype(v)

    @staticmethod
    def rank(node_or_val) -> int:
        v = node_or_val.meta["val"] if isinstance(node_or_val, fx.Node) else node_or_val
        return v.dim()

    def type_of(self, value) -> torch.dtype:
        if isinstance(value, str):
            return self.types[value]
        if isinstance(value, bool):
            return torch.bool
        return torch.int64 if isinstance(value, int) else torch.float32

    # -- values -------------------------------------------------------------------------
    def tensor(self, value, dtype: torch.dtype | None = None) -> str:
        """An ONNX tensor for a tensor name or a Python scalar, cast to `dtype` if given."""
        if isinstance(value, str):
            return self.cast(value, dtype) if dtype is not None else value
        if isinstance(value, (bool, int, float)):
            dtype = dtype or self.type_of(value)
            return self.g.const(value, _np(dtype))
        raise UnsupportedError(
            f"a value of type {type(value).__name__} where a tensor was expected"
        )

    def cast(self, name: str, dtype: torch.dtype) -> str:
        if self.types.get(name) == dtype:
            return name
        out = self.g.op("Cast", name, to=ONNX_TYPES[dtype])
        self.types[out] = dtype
        return out

    def sizes(self, values) -> str:
        """A list of ints and int64 scalar names -> a 1-D int64 tensor."""
        values = list(values)
        if all(isinstance(v, int) for v in values):
            return self.g.ints(*values)
        parts = [
            self.g.ints(v)
            if isinstance(v, int)
            else self.g.op("Reshape", self.cast(v, torch.int64), self.g.ints(1))
            for v in values
        ]
        return parts[0] if len(parts) == 1 else self.g.op("Concat", *parts, axis=0)

    def shape(self, x: str) -> str:
        return self.g.op("Shape", x)

    def dim(self, x: str, d: int) -> str:
        """Size of dimension d of x as an int64 scalar."""
        return self.g.op(
            "Squeeze",
            self.g.op("Shape", x, start=d, end=d + 1 if d != -1 else None)
            if d != -1
            else self.g.op("Shape", x, start=-1),
            self.g.ints(0),
        )

    def next_random_salt(self) -> int:
        self.random_ops += 1
        return self.random_ops - 1


def _sym_dtype(v) -> torch.dtype:
    if isinstance(v, (torch.SymBool, bool)):
        return torch.bool
    if isinstance(v, (torch.SymInt, int)):
        return torch.int64
    return torch.float64


def _np(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def lower_graph(
    ctx: Lowering,
    gm: fx.GraphModule,
    placeholders: dict[str, str],
    diagnose: Callable[[object], str] | None = None,
    outputs: list[int] | None = None,
) -> list:
    """Emit `gm`'s nodes; placeholders maps placeholder names to ONNX names already typed
    in ctx.types. Returns the output node's values (None for those not in `outputs`:
    with `outputs`, only the nodes those outputs depend on are emitted)."""
    needed = None if outputs is None else _needed(gm, outputs)
    for node in gm.graph.nodes:
        if needed is not None and node not in needed and node.op != "output":
            continue
        if node.op == "placeholder":
            ctx.env[node] = name = placeholders.get(node.name)
            val = node.meta.get("val")
            if name is not None and isinstance(val, torch.Tensor):
                for d, size in enumerate(val.shape):
                    if isinstance(size, torch.SymInt):
                        ctx.symbols.setdefault(str(size), (name, d))
            continue
        if node.op == "output":
            return [
                None
                if needed is not None and a not in needed
                else ctx.env[a]
                if isinstance(a, fx.Node)
                else a
                for a in node.args[0]
            ]
        if node.op == "get_attr":
            raise UnsupportedError(f"graph attribute {node.target} (lifted constants expected)")
        if node.target is operator.getitem:
            container = ctx.env[node.args[0]]
            ctx.env[node] = container[node.args[1]]
            continue
        lowering = LOWERINGS.get(node.target)
        if lowering is None:
            raise UnsupportedError(_refusal(node, diagnose))
        try:
            value = lowering(ctx, node, *ctx.args(node))
        except UnsupportedError as e:
            raise UnsupportedError(f"{e} ({_where(node, diagnose)})") from None
        except Exception as e:  # a lowering's bug must still name the op
            raise UnsupportedError(
                f"lowering {op_name(node.target)} failed ({type(e).__name__}: "
                f"{e}) ({_where(node, diagnose)})"
            ) from e
        ctx.env[node] = value
        _record_types(ctx, node, value)
    raise UnsupportedError("captured graph without output")


def _needed(gm: fx.GraphModule, outputs: list[int]) -> set[fx.Node]:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    stack = [out.args[0][i] for i in outputs if isinstance(out.args[0][i], fx.Node)]
    seen: set[fx.Node] = set()
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(node.all_input_nodes)
    return seen


def _record_types(ctx: Lowering, node: fx.Node, value) -> None:
    val = node.meta.get("val")
    if isinstance(value, str):
        if isinstance(val, torch.Tensor) or not isinstance(val, (tuple, list)):
            ctx.types.setdefault(value, ctx.dtype(node) if val is not None else torch.float32)
        return
    if isinstance(value, (tuple, list)) and isinstance(val, (tuple, list)):
        for v, m in zip(value, val):
            if isinstance(v, str) and isinstance(m, torch.Tensor):
                ctx.types.setdefault(v, m.dtype)


def _refusal(node: fx.Node, diagnose) -> str:
    return f"the general path cannot lower {op_name(node.target)} ({_where(node, diagnose)})"


def _where(node: fx.Node, diagnose) -> str:
    where = describe_node(node)
    if where is None and diagnose is not None:
        where = diagnose(node.target)
    return where or "in the backward pass"


def describe_node(node: fx.Node) -> str | None:
    """'module path (Type), File x.py line N: code' from FX node meta, when it has any."""
    parts = []
    stack = node.meta.get("nn_module_stack") or {}
    paths = [v for v in stack.values() if isinstance(v, tuple) and not str(v[0]).startswith("_")]
    if paths:
        path, kind = paths[-1]
        path = str(path).removeprefix("L['self'].").removeprefix("model.").removeprefix("model")
        parts.append(f"module {path or '<root>'} ({getattr(kind, '__name__', kind)})")
    frame = user_frame(node.meta.get("stack_trace"))
    if frame:
        parts.append(frame)
    return ", ".join(parts) or None


def user_frame(stack_trace: str | None) -> str | None:
    """The innermost frame of the user's code in an FX stack trace string."""
    if not stack_trace:
        return None
    lines = stack_trace.strip().splitlines()
    best = None
    for i, line in enumerate(lines):
        line = line.strip()
        if line.startswith('File "'):
            path = line.split('"')[1]
            if "/torch/" in path or "/model_zoo/compiler/" in path:
                continue
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            lineno = line.split("line ")[1].split(",")[0] if "line " in line else "?"
            best = f"{path}:{lineno}: {code}"
    return best


def supported_ops() -> list[str]:
    """Names of every op the general path lowers (for the docs)."""
    return sorted({op_name(t) for t in LOWERINGS})
