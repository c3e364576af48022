"""Capture a model's train step and forward as core-ATen FX graphs with dynamic dimensions.

The train step is the model, the loss and the backward pass: torch.export traces
`loss_fn(model(*inputs), targets)` (non-strict, so any Python the model runs is fine as
long as its tensor operations are traceable) with the batch and sequence dimensions as
`torch.export.Dim`s, and `_export_forward_backward` turns that into one joint graph whose
outputs are the loss, the model's outputs, every parameter's gradient and the new value
of every buffer the step updates (BatchNorm's running statistics). The evaluation graph
(and, without its loss, the inference graph) is a forward-only export in eval mode.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import re
import traceback
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch._decomp import core_aten_decompositions
from torch.export import Dim, export
from torch.export.experimental import (
    _copy_graph_module_and_signature,
    _remove_detach_pass,
)
from torch.export.exported_program import _decompose_exported_program
from torch.export.graph_signature import InputKind, OutputKind

from ..ops.base import UnsupportedError
from .lowering import KEPT
from .recurrent import recurrent_layers

MODEL = "model"
# the model's attribute name inside the step wrappers below


class _Step(nn.Module):
    """loss_fn(model(**inputs), targets) -> (loss, detached outputs)."""

    def __init__(self, model: nn.Module, loss_fn, input_names: list[str], flatten: bool):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.input_names, self.flatten = input_names, flatten

    def forward(self, *tensors):
        out = self.model(**dict(zip(self.input_names, tensors[:-1])))
        if not isinstance(out, torch.Tensor):
            raise UnsupportedError(
                f"{type(self.model).__name__}.forward ({_source_of(type(self.model).forward)}) "
                f"returns {type(out).__name__}, not one tensor: a bundle's model returns the "
                "logits or predictions its loss reads (wrap the module to pick one output, "
                "and compute any extra term inside the model)"
            )
        target = tensors[-1]
        if self.flatten:  # language models: [B, T, C] logits, [B, T] targets
            loss = self.loss_fn(out.reshape(-1, out.shape[-1]), target.reshape(-1))
        else:
            loss = self.loss_fn(out, target)
        return loss, out.detach()


@dataclass
class Graph:
    """One captured graph: its FX graph and what its placeholders and outputs are.

    inputs: placeholder name -> ("input", input name) | ("parameter", name) |
    ("buffer", name) | ("constant", tensor). outputs: one (kind, name) per output node
    argument, kind "loss", "outputs", "gradient", "buffer".
    """

    gm: fx.GraphModule
    inputs: dict[str, tuple[str, object]]
    outputs: list[tuple[str, str | None]]


@dataclass
class Capture:
    train: Graph
    eval: Graph  # also the inference graph: its model outputs without the loss
    parameters: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # float buffers the step updates
    forward: torch.export.ExportedProgram | None = None  # train-mode forward, for diagnostics


def capture(
    model: nn.Module,
    loss_fn,
    inputs: dict[str, torch.Tensor],
    target: torch.Tensor,
    dynamic: dict[str, dict[int, str]],
    flatten: bool,
) -> Capture:
    """Export the train step (train mode) and the eval/infer forwards (eval mode).

    inputs: the model's inputs by forward-parameter name (sample values); dynamic: per
    input name (and "__target__") the dynamic dimensions by index -> dimension name.
    """
    _refuse_cumulative_batch_norm(model)
    names = list(inputs)
    sample = [_widen(inputs[n], dynamic.get(n, {})) for n in names]
    target = _widen(target, dynamic.get("__target__", {}))

    def spec(n):
        return {i: Dim.DYNAMIC for i in dynamic.get(n, {})} or None

    in_specs = tuple(spec(n) for n in names)
    was_training = model.training
    try:
        with _composites(), recurrent_layers():
            model.train()
            step = _Step(model, loss_fn, names, flatten)
            specs = in_specs + (spec("__target__"),)
            ep = _export(step, (*sample, target), specs, decompose=False)
            idle = _idle_parameters(model, ep)
            if idle:  # export's joint graph wants a gradient for every parameter
                with _as_buffers(model, idle):
                    joint = _joint(_export(step, (*sample, target), specs, decompose=False))
            else:
                joint = _joint(ep)
            model.eval()
            ev = _export(step, (*sample, target), specs)
    finally:
        model.train(was_training)
    parameters = dict(model.named_parameters())
    train = _graph(joint, names + ["__target__"])
    for ph, (kind, name) in list(train.inputs.items()):
        if kind == "buffer" and name in idle:
            train.inputs[ph] = ("parameter", name)  # an input, never updated
    mutated = {name for kind, name in train.outputs if kind == "buffer"}
    all_buffers = dict(model.named_buffers())
    state = {n: b for n, b in all_buffers.items() if n in mutated and b.is_floating_point()}
    for n in mutated - set(state):
        _check_dropped_buffer(train, n)
    graphs = [train, _graph(ev, names + ["__target__"])]
    for gr in graphs:  # buffers that are not bundle state are constants
        for ph, (kind, name) in list(gr.inputs.items()):
            if kind == "buffer" and name not in state:
                gr.inputs[ph] = ("constant", _buffer_value(model, loss_fn, name))
    train.outputs = [
        (k, n) if k != "buffer" or n in state else ("dropped", n) for k, n in train.outputs
    ]
    return Capture(train, graphs[1], parameters, state, ep)


def _refuse_cumulative_batch_norm(model: nn.Module) -> None:
    """BatchNorm with momentum=None averages with 1 / num_batches_tracked, a Python float
    read from a buffer, which no graph can take: say so rather than torch's guard error."""
    for name, module in model.named_modules():
        norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        if norm and module.momentum is None and module.track_running_stats:
            raise UnsupportedError(
                f"{type(module).__name__} with momentum=None (a cumulative average) at "
                f"{name or '<root>'}: give it a momentum (PyTorch's default is 0.1)"
            )


@contextlib.contextmanager
def _composites():
    """While capturing, functions whose fused kernels have no core-ATen backward (or whose
    kernels fix a dynamic size while tracing) run as compositions of core ops:
    F.scaled_dot_product_attention as matmuls and a softmax (nn.MultiheadAttention and
    the Transformer layers call it through torch.nn.functional too), F.embedding_bag as a
    lookup and a reduction, F.max_pool1d as a one-row max_pool2d, F.bilinear as an
    einsum, torch._weight_norm (nn.utils.parametrizations.weight_norm) and torch.cdist
    as their formulas."""
    table = [
        (F, "scaled_dot_product_attention", attention),
        (F, "embedding_bag", embedding_bag),
        (F, "max_pool1d", max_pool1d),
        (F, "bilinear", bilinear),
        (torch, "_weight_norm", weight_norm),
        (torch, "cdist", cdist),
    ]
    fused = [(owner, name, getattr(owner, name)) for owner, name, _ in table]
    for owner, name, composite in table:
        setattr(owner, name, composite)
    try:
        yield
    finally:
        for owner, name, fn in fused:
            setattr(owner, name, fn)


def bilinear(input1, input2, weight, bias=None):
    """F.bilinear: x1^T W_o x2 (+ b_o) per output o. PyTorch's _trilinear kernel fails
    inside export's joint tracing; the einsum is the same sum."""
    out = torch.einsum("...i,oij,...j->...o", input1, weight, input2)
    return out if bias is None else out + bias


def cdist(x1, x2, p=2.0, compute_mode=None):
    """torch.cdist as differences of every pair: its fused kernel's backward is not core
    ATen. A distance of zero has gradient zero, as in PyTorch (the clamp's)."""
    diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)  # [..., P, R, M]
    if p == 2:
        return torch.sqrt(torch.clamp(diff.pow(2).sum(-1), min=1e-30))
    if p == 1:
        return diff.abs().sum(-1)
    if p == float("inf"):
        return diff.abs().amax(-1)
    return torch.clamp(diff.abs().pow(p).sum(-1), min=1e-30).pow(1.0 / p)


def weight_norm(v, g, dim=0):
    """torch._weight_norm: g * v / ||v||, the norm over every dimension but `dim` (over
    all of v when dim is -1). Its fused backward has no lowering; the formula's does."""
    if dim == -1:
        return g * v / torch.linalg.vector_norm(v)
    dim = dim % v.dim()
    others = [i for i in range(v.dim()) if i != dim]
    return g * v / torch.linalg.vector_norm(v, dim=others, keepdim=True)


def max_pool1d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
):
    """F.max_pool1d over [N, C, L] (or [C, L]) as max_pool2d over [N, C, 1, L]: PyTorch's
    1-d kernel reads the length as a Python int while tracing, which fixes it."""

    def one(v):
        return (1, v[0] if isinstance(v, (list, tuple)) else v)

    out = F.max_pool2d(
        input.unsqueeze(-2),
        one(kernel_size),
        one(stride if stride else kernel_size),
        (0, padding[0] if isinstance(padding, (list, tuple)) else padding),
        one(dilation),
        ceil_mode=ceil_mode,
        return_indices=return_indices,
    )
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def embedding_bag(
    input,
    weight,
    offsets=None,
    max_norm=None,
    norm_type=2,
    scale_grad_by_freq=False,
    mode="mean",
    sparse=False,
    per_sample_weights=None,
    include_last_offset=False,
    padding_idx=None,
):
    """F.embedding_bag for bags given as rows of a 2-D input (fixed-size bags); ids equal
    to padding_idx are left out of the bag, as PyTorch does."""
    if input.dim() != 2 or offsets is not None:
        raise UnsupportedError(
            "EmbeddingBag with 1-D input and offsets; pass bags as a 2-D "
            "[bags, ids] tensor (pad with padding_idx)"
        )
    if max_norm is not None or scale_grad_by_freq:
        raise UnsupportedError("EmbeddingBag with max_norm or scale_grad_by_freq")
    rows = F.embedding(input, weight)
    keep = (
        torch.ones_like(input, dtype=rows.dtype)
        if padding_idx is None
        else (input != padding_idx).to(rows.dtype)
    )
    if per_sample_weights is not None:
        keep = keep * per_sample_weights
    keep = keep.unsqueeze(-1)
    if mode == "max":
        masked = torch.where(keep > 0, rows, torch.full_like(rows, float("-inf")))
        best = masked.amax(dim=1)
        return torch.where(torch.isinf(best), torch.zeros_like(best), best)
    total = (rows * keep).sum(dim=1)
    if mode == "sum":
        return total
    return total / keep.sum(dim=1).clamp(min=1.0)


def attention(
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """softmax(q k^T * scale + mask) v, the definition F.scaled_dot_product_attention
    documents. q [..., L, E], k [..., S, E], v [..., S, Ev]; a boolean mask keeps True."""
    if enable_gqa:
        repeat = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(repeat, dim=-3)
        value = value.repeat_interleave(repeat, dim=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if is_causal:
        length, source = query.shape[-2], key.shape[-2]
        keep = torch.ones(length, source, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p, training=True)
    return torch.matmul(weights, value)


def _idle_parameters(model: nn.Module, ep) -> set[str]:
    """Parameters the step does not train: frozen (requires_grad=False) or unused."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    used = {node.name for node in ep.graph.nodes if node.op == "placeholder" and node.users}
    unused = {
        _strip(spec.target)
        for spec in ep.graph_signature.input_specs
        if spec.kind == InputKind.PARAMETER and spec.arg.name not in used
    }
    return frozen | unused


@contextlib.contextmanager
def _as_buffers(model: nn.Module, names: set[str]):
    """Register the named parameters as buffers for a while (export then leaves them out
    of the backward)."""
    moved = []
    for name in sorted(names):
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        p = owner._parameters.pop(attr)
        owner.register_buffer(attr, p.detach())
        moved.append((owner, attr, p))
    try:
        yield
    finally:
        for owner, attr, p in moved:
            del owner._buffers[attr]
            owner._parameters[attr] = p


def _widen(t: torch.Tensor, dims: dict[int, str]) -> torch.Tensor:
    """Repeat a dynamic dimension of size 1 to 2: export specialises sizes 0 and 1."""
    for i in dims:
        if t.shape[i] == 1:
            t = torch.cat([t, t], dim=i)
    return t


def _joint(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Forward + backward in core ATen: export's own joint decomposition, with the
    composite ops (scaled_dot_product_attention, ...) decomposed too, so their backward
    is made of core ops; the ops in `lowering.KEPT` stay whole (their lowerings are
    faster than their decompositions)."""
    table = {op: fn for op, fn in core_aten_decompositions().items() if op not in KEPT}
    table[torch.ops.aten.constant_pad_nd.default] = _pad_by_concat
    try:
        ep = _decompose_exported_program(
            ep,
            cia_to_decomp={},
            python_decomp_table=table,
            joint_loss_index=0,
            decompose_custom_triton_ops=False,
        )
    except Exception as e:  # name the cause, not torch's internals
        raise UnsupportedError(
            f"PyTorch could not differentiate the train step ({type(e).__name__}: {_first_line(e)})"
        ) from e
    gm, signature = _copy_graph_module_and_signature(ep)
    _remove_detach_pass(gm, signature)
    return ep._update(gm, signature)


def _pad_by_concat(x, pad, value=0):
    """constant_pad_nd as slices (negative amounts crop: the backward of every padding)
    and concatenated constant blocks. PyTorch's kernel reads sizes as plain ints, which
    on the joint trace's symbolic sizes quietly fixes the batch (and sequence) size to the
    sample's; these ops keep them symbolic."""
    for i in range(len(pad) // 2):
        dim = x.dim() - 1 - i
        before, after = pad[2 * i], pad[2 * i + 1]
        if before < 0 or after < 0:
            end = x.shape[dim] + after if after < 0 else x.shape[dim]
            x = torch.ops.aten.slice.Tensor(x, dim, max(0, -before), end)
        parts = []
        for amount in (before, after):
            shape = list(x.shape)
            shape[dim] = amount
            parts.append(torch.full(shape, value, dtype=x.dtype) if amount > 0 else None)
        if parts[0] is not None or parts[1] is not None:
            x = torch.cat([p for p in (parts[0], x, parts[1]) if p is not None], dim)
    return x


def _export(
    module: nn.Module, args: tuple, dynamic_shapes, decompose: bool = True
) -> torch.export.ExportedProgram:
    try:
        ep = export(module, args, dynamic_shapes=(tuple(dynamic_shapes),), strict=False)
        return ep.run_decompositions() if decompose else ep
    except UnsupportedError as e:
        frame = _user_frame(e)
        raise UnsupportedError(f"{e} (at {frame})" if frame else str(e)) from None
    except Exception as e:  # torch.export raises many kinds; name the cause
        fixed = _fixed_dimension(e, [*module.input_names, "the targets"])
        if fixed:
            raise UnsupportedError(fixed) from e
        raise UnsupportedError(
            f"PyTorch could not capture the train step ({type(e).__name__}: {_first_line(e)})"
        ) from e


def _fixed_dimension(e: Exception, names: list[str]) -> str | None:
    """torch.export's "Constraints violated (L['tensors'][i].size()[d])" in the user's
    terms: the model fixes a dimension the bundle was asked to keep dynamic."""
    found = re.search(r"L\['tensors'\]\[(\d+)\]\.size\(\)\[(\d+)\]", str(e))
    if not found or "Constraints violated" not in str(e):
        return None
    index, dim = int(found[1]), int(found[2])
    name = names[index] if index < len(names) else f"input {index}"
    name = name if name == "the targets" else f"input '{name}'"
    return (
        f"the model fixes dimension {dim} of {name}, which the bundle keeps dynamic (batch "
        "and sequence sizes vary from device to device): a Python loop or branch over that "
        "size (e.g. a loop over time steps with an RNN cell; nn.LSTM / nn.GRU / nn.RNN run "
        "any length), or a shape computed from it. Rewrite that part, or compile with that "
        "dimension static (dynamic_dims)"
    )


def _first_line(e: Exception) -> str:
    """torch's first line of explanation, and the user's source line where it failed."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    frame = _user_frame(e)
    return f"{first}; at {frame}" if frame else first


def _source_of(fn) -> str:
    """file:line of a function's definition, for messages."""
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (OSError, TypeError):
        return getattr(fn, "__qualname__", "?")


def _user_frame(e: BaseException) -> str | None:
    """The innermost frame outside torch and the compiler in e's traceback (or its cause's)."""
    best = None
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for frame in traceback.extract_tb(e.__traceback__):
            path = frame.filename.replace("\\", "/")
            if (
                "/torch/" in path
                or "/model_zoo/compiler/" in path
                or "/site-packages/" in path
                or path.startswith("<")  # code torch generated (<string>, <eval_with_key>)
            ):
                continue
            best = f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
        e = e.__cause__ or e.__context__
    return best


def _graph(ep: torch.export.ExportedProgram, input_names: list[str]) -> Graph:
    sig = ep.graph_signature
    user = iter(input_names)
    inputs: dict[str, tuple[str, object]] = {}
    for spec in sig.input_specs:
        ph = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            inputs[ph] = ("input", next(user))
        elif spec.kind == InputKind.PARAMETER:
            inputs[ph] = ("parameter", _strip(spec.target))
        elif spec.kind == InputKind.BUFFER:
            inputs[ph] = ("buffer", _strip(spec.target))
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            inputs[ph] = ("constant", ep.constants[spec.target])
        else:
            raise UnsupportedError(f"graph input of kind {spec.kind.name}")
    outputs: list[tuple[str, str | None]] = []
    user_outputs = 0
    for spec in sig.output_specs:
        if spec.kind in (OutputKind.LOSS_OUTPUT, OutputKind.USER_OUTPUT):
            outputs.append(
                (
                    "loss"
                    if user_outputs == 0 and len(input_names) and input_names[-1] == "__target__"
                    else "outputs",
                    None,
                )
            )
            user_outputs += 1
        elif spec.kind == OutputKind.GRADIENT_TO_PARAMETER:
            outputs.append(("gradient", _strip(spec.target)))
        elif spec.kind == OutputKind.BUFFER_MUTATION:
            outputs.append(("buffer", _strip(spec.target)))
        else:
            raise UnsupportedError(
                f"graph output of kind {spec.kind.name} (the step mutates one of its inputs)"
            )
    return Graph(ep.graph_module, inputs, outputs)


def _strip(target: str) -> str:
    return target.removeprefix(MODEL + ".")


def _buffer_value(model: nn.Module, loss_fn, name: str) -> torch.Tensor:
    owner, key = (model, name) if not name.startswith("loss_fn.") else (loss_fn, name[8:])
    return owner.get_buffer(key).detach()


def _check_dropped_buffer(train: Graph, name: str) -> None:
    """An integer buffer (BatchNorm's num_batches_tracked) is not bundle state; refuse if
    the step reads it for anything but its own update (BatchNorm with momentum=None)."""
    ph = next(p for p, (k, n) in train.inputs.items() if k == "buffer" and n == name)
    node = next(n for n in train.gm.graph.nodes if n.name == ph)
    out = next(n for n in train.gm.graph.nodes if n.op == "output")
    for user in node.users:
        if set(user.users) - {out}:
            raise UnsupportedError(
                f"buffer {name} is an integer the step reads "
                "(BatchNorm with momentum=None?); set a momentum"
            )
