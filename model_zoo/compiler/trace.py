"""Trace a PyTorch module into a `Program`: the calls the compiler knows how to lower.

torch.fx traces the module's forward with every supported layer kept as a leaf call, and a
shape propagation over the sample batch records the static sizes some lowerings need
(channels, image size). Anything the registry does not know stops the compile with an
`UnsupportedError` that names the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .graph import GraphBuilder
from .ops.base import Op, UnsupportedError
from .registry import FUNCTIONS, LEAF_MODULES, METHODS, MODULES


@dataclass
class TapeEntry:
    op: Op
    inputs: list[str]
    outputs: list[str]
    needs_grad: list[bool]


@dataclass
class Program:
    """A traced module: its fx graph, its parameters by canonical name, its input names."""

    gm: fx.GraphModule
    parameters: dict[str, torch.Tensor]
    input_names: list[str]
    param_name_of: dict[int, str] = field(repr=False)
    uses_dropout: bool = False


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_MODULES) or super().is_leaf_module(m, qualname)


def trace(module: nn.Module, sample_inputs: dict[str, torch.Tensor]) -> Program:
    """Trace `module(**sample_inputs)`; inputs are passed by the forward's parameter names."""
    graph = _Tracer().trace(module)
    gm = fx.GraphModule(module, graph)
    placeholders = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    missing = [name for name in placeholders if name not in sample_inputs]
    if missing:
        raise ValueError(
            f"sample batch lacks the model inputs {missing}; forward takes {placeholders}"
        )
    ShapeProp(gm).propagate(*[sample_inputs[name] for name in placeholders])
    param_name_of: dict[int, str] = {}
    parameters: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters():  # tied parameters appear once, by first name
        param_name_of[id(p)] = name
        parameters[name] = p
    uses_dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())
    return Program(gm, parameters, placeholders, param_name_of, uses_dropout)


class LoweringContext:
    """What a lowering may ask while it is built: argument names, parameter names, shapes."""

    def __init__(self, program: Program, env: dict, g: GraphBuilder):
        self.program, self.env, self.g = program, env, g
        self.seed_input = "seed"
        self._dropouts = 0

    def arg(self, node_or_value):
        if isinstance(node_or_value, fx.Node):
            return self.env[node_or_value]
        return node_or_value

    def param(self, p: torch.Tensor | None) -> str | None:
        if p is None:
            return None
        return self.program.param_name_of[id(p)]

    @staticmethod
    def shape(node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape)

    def next_dropout_salt(self) -> int:
        self._dropouts += 1
        return self._dropouts - 1


def _leaves(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (tuple, list)):
        return [leaf for v in value for leaf in _leaves(v)]
    return []


def emit(
    program: Program,
    g: GraphBuilder,
    inputs: dict[str, str],
    training: bool,
    requires_grad: set[str],
) -> tuple[object, list[TapeEntry]]:
    """Emit the forward graph; returns (output value, tape of differentiable calls).

    `inputs` maps model input names to graph tensor names; parameters are graph tensors
    named by their canonical names. `requires_grad` holds the tensor names gradients are
    wanted for (the parameters); it grows with every call that depends on them.
    """
    env: dict = {}
    ctx = LoweringContext(program, env, g)
    tape: list[TapeEntry] = []
    gm = program.gm
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = inputs[node.target]
            continue
        if node.op == "output":
            return env[node.args[0]], tape
        if node.op == "get_attr":
            env[node] = _get_attr(ctx, node)
            continue
        if node.op == "call_function" and node.target.__name__ == "getitem":
            env[node] = _getitem(env[node.args[0]], node)
            continue
        op, args = _lower(ctx, node)
        value = op.forward(g, args, training)
        env[node] = value
        outs = _leaves(value)
        needs = [a in requires_grad for a in args]
        if any(needs) and not set(outs) <= set(args):
            requires_grad.update(outs)
            tape.append(TapeEntry(op, args, outs, needs))
    raise AssertionError("fx graph without output")


def _get_attr(ctx: LoweringContext, node: fx.Node):
    obj = ctx.program.gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, nn.Parameter):
        return ctx.param(obj)
    if isinstance(obj, torch.Tensor):
        return ctx.g.const(obj.detach().numpy())
    raise UnsupportedError(f"attribute {node.target!r} of type {type(obj).__name__}")


def _getitem(value, node: fx.Node):
    if isinstance(value, tuple):
        return value[node.args[1]]
    raise UnsupportedError(
        f"indexing a tensor ({node.format_node()}) is not supported; "
        "index only the tuples returned by recurrent layers"
    )


def _lower(ctx: LoweringContext, node: fx.Node) -> tuple[Op, list[str]]:
    if node.op == "call_module":
        module = ctx.program.gm.get_submodule(node.target)
        lowering = MODULES.get(type(module))
        if lowering is None:
            raise UnsupportedError(f"layer {type(module).__name__} ({node.target})")
        op, args = lowering(ctx, node, module)
    elif node.op == "call_function":
        lowering = FUNCTIONS.get(node.target)
        if lowering is None:
            raise UnsupportedError(f"function {getattr(node.target, '__name__', node.target)}")
        op, args = lowering(ctx, node)
    elif node.op == "call_method":
        lowering = METHODS.get(node.target)
        if lowering is None:
            raise UnsupportedError(f"tensor method .{node.target}()")
        op, args = lowering(ctx, node)
    else:
        raise UnsupportedError(f"fx node kind {node.op}")
    return op, [a for a in args if a is not None]
