"""Assemble the bundle's three graphs from a traced program, a loss and an optimizer."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import torch

from .gradients import Gradient, accumulate, dense
from .graph import GraphBuilder
from .losses import CrossEntropy
from .ops.base import add_all
from .optimizers import Optimizer
from .trace import Program, TapeEntry, emit

TOP_K = 3  # language-model metrics and suggestions use the top 3, as keyboards show three


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple  # ints, or strings naming a dynamic dimension

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}


def declare_update_inputs(g: GraphBuilder, opt: Optimizer, params: dict) -> tuple[str, str]:
    """The train step's inputs beyond the batch and the parameters: each parameter's
    optimizer state (float32, its shape), the learning rate (float32 []) and the step
    number (int64 [], from 1). Returns the names of lr and step."""
    for name, p in params.items():
        for slot in opt.slots:
            g.add_input(state_name(opt, slot, name), "float32", list(p.shape))
    return g.add_input("lr", "float32", []), g.add_input("step", "int64", [])


def state_name(opt: Optimizer, slot: str, param: str) -> str:
    return f"{opt.name}.{slot}.{param}"


def updated(name: str) -> str:
    return f"new.{name}"


@dataclass
class GraphPlan:
    program: Program
    loss: CrossEntropy
    optimizer: Optimizer
    inputs: list[TensorSpec]
    target: TensorSpec
    num_classes: int
    sequence_model: bool
    clip_grad_norm: float | None = None

    def _declare(self, g: GraphBuilder, with_target: bool) -> dict[str, str]:
        for spec in self.inputs + ([self.target] if with_target else []):
            g.add_input(spec.name, spec.dtype, list(spec.shape))
        for name, p in self.program.parameters.items():
            g.add_input(name, "float32", list(p.shape))
        return {spec.name: spec.name for spec in self.inputs}

    def _logits_shape(self) -> list:
        return (
            ["batch", "seq", self.num_classes]
            if self.sequence_model
            else ["batch", self.num_classes]
        )

    # -- train step -------------------------------------------------------------------
    def train_step(self) -> onnx.ModelProto:
        g = GraphBuilder()
        inputs = self._declare(g, with_target=True)
        opt, params = self.optimizer, self.program.parameters
        lr, step = declare_update_inputs(g, opt, params)
        if self.program.uses_dropout:
            g.add_input("seed", "int64", [])
        requires = set(params)
        logits, tape = emit(self.program, g, inputs, training=True, requires_grad=requires)
        loss = self.loss.emit(
            g,
            logits,
            self.target.name,
            self.num_classes,
            want_grad=True,
            grad_scale=lr if opt.prescales_gradient else None,
            sequence=len(self.target.shape) > 1,
        )
        grads = backpropagate(g, tape, {logits: loss["dlogits"]})
        if self.clip_grad_norm is not None:
            scale = lr if opt.prescales_gradient else None
            grads = clip_by_global_norm(g, grads, self.clip_grad_norm, scale)
        for key in ("loss", "loss_sum", "correct", "count"):
            g.add_output(g.identity(loss[key], key), "float32", [])
        for name, p in params.items():
            state = {slot: state_name(opt, slot, name) for slot in opt.slots}
            if name in grads:
                new_p, new_state = opt.emit(g, name, grads[name], state, lr, step)
            else:  # unused by the forward: torch leaves it (and its state) untouched
                new_p, new_state = name, state
            g.add_output(g.identity(new_p, updated(name)), "float32", list(p.shape))
            for slot, value in new_state.items():
                out = updated(state[slot])
                g.add_output(g.identity(value, out), "float32", list(p.shape))
        return g.to_model("train_step")

    # -- evaluation ---------------------------------------------------------------------
    def eval(self) -> onnx.ModelProto:
        g = GraphBuilder()
        inputs = self._declare(g, with_target=True)
        logits, _ = emit(self.program, g, inputs, training=False, requires_grad=set())
        top_k = TOP_K if self.sequence_model else 0
        loss = self.loss.emit(
            g,
            logits,
            self.target.name,
            self.num_classes,
            want_grad=False,
            top_k=top_k,
            sequence=len(self.target.shape) > 1,
        )
        for key in self.eval_metrics():
            g.add_output(g.identity(loss[key], key), "float32", [])
        return g.to_model("eval")

    def eval_metrics(self) -> list[str]:
        return ["loss_sum", "correct", "count"] + (
            [f"correct_top{TOP_K}"] if self.sequence_model else []
        )

    # -- inference ----------------------------------------------------------------------
    def infer(self) -> onnx.ModelProto:
        g = GraphBuilder()
        inputs = self._declare(g, with_target=False)
        logits, _ = emit(self.program, g, inputs, training=False, requires_grad=set())
        g.add_output(g.identity(logits, "logits"), "float32", self._logits_shape())
        probs = g.op("Softmax", logits, axis=-1)
        k = min(TOP_K, self.num_classes)
        top_shape = self._logits_shape()[:-1] + [k]
        g.op("TopK", probs, g.ints(k), axis=-1, outputs=["top_scores", "top_ids"])
        g.add_output("top_scores", "float32", top_shape)
        g.add_output("top_ids", "int64", top_shape)
        return g.to_model("infer")


def backpropagate(
    g: GraphBuilder, tape: list[TapeEntry], seeds: dict[str, Gradient]
) -> dict[str, Gradient]:
    """Reverse-mode differentiation over the tape; returns the summed gradient per tensor
    (parameter gradients may stay factored: see gradients.py)."""
    pending: dict[str, list[Gradient]] = {name: [grad] for name, grad in seeds.items()}
    for entry in reversed(tape):
        grad_outputs = [
            _incoming(g, entry, pending.pop(o)) if o in pending else None for o in entry.outputs
        ]
        if all(gr is None for gr in grad_outputs):
            continue
        grad_inputs = entry.op.backward(g, grad_outputs, entry.needs_grad)
        for name, grad, needed in zip(entry.inputs, grad_inputs, entry.needs_grad):
            if needed and grad is not None:
                pending.setdefault(name, []).extend(grad if isinstance(grad, list) else [grad])
    return {name: accumulate(g, grads) for name, grads in pending.items()}


def _incoming(g: GraphBuilder, entry: TapeEntry, terms: list[Gradient]) -> Gradient:
    grad = accumulate(g, terms)
    if isinstance(grad, str) or isinstance(grad, entry.op.structured_gradients):
        return grad
    return dense(g, grad)


def clip_by_global_norm(
    g: GraphBuilder, grads: dict[str, Gradient], max_norm: float, scale: str | None
) -> dict[str, str]:
    """torch.nn.utils.clip_grad_norm_: every gradient times min(1, max_norm / (norm + 1e-6)).

    `scale` is the factor the gradients already carry (plain SGD's lr), so the norm is
    compared as if unscaled.
    """
    grads = {name: dense(g, grad) for name, grad in grads.items()}
    squares = [g.op("ReduceSumSquare", grad, keepdims=0) for grad in grads.values()]
    norm = g.op("Sqrt", add_all(g, squares))
    if scale is not None:
        norm = g.op("Div", norm, scale)
    coef = g.op(
        "Min", g.op("Div", g.const(max_norm), g.op("Add", norm, g.const(1e-6))), g.const(1.0)
    )
    return {name: g.op("Mul", grad, coef) for name, grad in grads.items()}


def spec_from_tensor(name: str, t: torch.Tensor, dynamic: dict[int, str]) -> TensorSpec:
    shape = tuple(dynamic.get(i, n) for i, n in enumerate(t.shape))
    return TensorSpec(name, str(t.dtype).removeprefix("torch."), shape)
