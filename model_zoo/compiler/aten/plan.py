"""The bundle's three graphs from a captured step: lowered ATen plus optimizer and metrics.

Graph interface as the fast path's (docs/bundle-format.md): train_step takes inputs,
targets, parameters, buffers, optimizer state, lr, step (and seed when the step draws
random numbers) and returns loss, metric sums and `new.<name>` for every parameter,
buffer and state tensor; eval returns metric sums; infer returns logits (and top-k).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import torch

from ..graph import GraphBuilder
from ..graphs import (
    TensorSpec,
    clip_by_global_norm,
    declare_update_inputs,
    state_name,
    updated,
)
from ..optimizers import Optimizer
from .capture import Capture, Graph
from .lowering import Lowering, describe_node, lower_graph
from .metrics import TOP_K, emit_metrics, metric_names

TARGET = "__target__"


@dataclass
class GeneralPlan:
    capture: Capture
    optimizer: Optimizer
    inputs: list[TensorSpec]
    target: TensorSpec
    output_shape: list  # the model output's shape (ints and dimension names)
    task: str
    ignore_index: int
    clip_grad_norm: float | None = None
    uses_seed: bool = False
    # multilabel: what the model outputs ("logits" or "probabilities", as BCELoss reads)
    # and the target value above which a label is positive (0.5 for 0/1, 0 for -1/1)
    label_outputs: str = "logits"
    label_target_threshold: float = 0.5

    @property
    def num_classes(self) -> int:
        """The output's last dimension; 1 for one value per example (a regression model's
        [batch] output, whose last dimension is the dynamic batch)."""
        last = self.output_shape[-1] if self.output_shape else 1
        return last if isinstance(last, int) else 1

    def _declare(self, g: GraphBuilder, ctx: Lowering, with_target: bool) -> None:
        self._with_target = with_target
        for spec in self.inputs + ([self.target] if with_target else []):
            g.add_input(spec.name, spec.dtype, list(spec.shape))
            ctx.types[spec.name] = getattr(torch, spec.dtype)
        for name, p in list(self.capture.parameters.items()) + list(self.capture.buffers.items()):
            g.add_input(name, "float32", list(p.shape))
            ctx.types[name] = torch.float32

    def _placeholders(self, g: GraphBuilder, ctx: Lowering, graph: Graph) -> dict[str, str]:
        names = {}
        for ph, (kind, what) in graph.inputs.items():
            if kind == "input":
                if what == TARGET and not self._with_target:
                    continue
                names[ph] = self.target.name if what == TARGET else what
            elif kind == "buffer" and what not in self.capture.buffers:
                continue  # dropped state (num_batches_tracked): unused by the outputs
            elif kind in ("parameter", "buffer"):
                names[ph] = what
            else:  # a constant tensor captured with the graph
                array = what.detach().cpu().numpy()
                names[ph] = g.const(array, array.dtype)
                ctx.types[names[ph]] = what.dtype
        return names

    def _lower(self, g: GraphBuilder, ctx: Lowering, graph: Graph) -> dict:
        values = lower_graph(ctx, graph.gm, self._placeholders(g, ctx, graph), self._diagnose)
        out: dict = {"gradient": {}, "buffer": {}}
        for (kind, name), value in zip(graph.outputs, values):
            if kind in ("gradient", "buffer"):
                if value is not None:
                    out[kind][name] = value
            elif kind in ("loss", "outputs"):
                out.setdefault(kind, value)
        return out

    def _diagnose(self, target) -> str | None:
        """Where an op without meta (a backward node) comes from: the first node of the
        same op in the forward capture, which has the module stack and source line."""
        forward = self.capture.forward
        if forward is None:
            return None
        for node in forward.graph.nodes:
            if node.op == "call_function" and node.target == target:
                return describe_node(node)
        return None

    def _metrics(self, g, ctx, lowered, eval_graph: bool) -> dict:
        target_dtype = getattr(torch, self.target.dtype)
        loss = ctx.tensor(lowered["loss"], torch.float32)
        return emit_metrics(
            g,
            self.task,
            ctx.tensor(lowered["outputs"], torch.float32),
            self.target.name,
            target_dtype.is_floating_point,
            self.ignore_index,
            self.num_classes,
            loss,
            eval_graph,
            (0.5 if self.label_outputs == "probabilities" else 0.0, self.label_target_threshold),
        ) | {"loss": loss}

    # -- train step -------------------------------------------------------------------
    def train_step(self) -> onnx.ModelProto:
        g = GraphBuilder()
        ctx = Lowering(g, seed="seed")
        self._declare(g, ctx, with_target=True)
        opt, params = self.optimizer, self.capture.parameters
        lr, step = declare_update_inputs(g, opt, params)
        lowered = self._lower(g, ctx, self.capture.train)
        self.uses_seed = ctx.random_ops > 0
        if self.uses_seed:
            g.add_input("seed", "int64", [])
        metrics = self._metrics(g, ctx, lowered, eval_graph=False)
        grads = {
            n: ctx.tensor(v, torch.float32)
            for n, v in lowered["gradient"].items()
            if n in params and params[n].requires_grad
        }
        if self.clip_grad_norm is not None:
            grads = clip_by_global_norm(g, grads, self.clip_grad_norm, None)
        if opt.prescales_gradient:
            grads = {n: g.op("Mul", v, lr) for n, v in grads.items()}
        for key in ["loss"] + metric_names(self.task, eval_graph=False):
            g.add_output(g.identity(metrics[key], key), "float32", [])
        for name, p in params.items():
            state = {slot: state_name(opt, slot, name) for slot in opt.slots}
            if name in grads:
                new_p, new_state = opt.emit(g, name, grads[name], state, lr, step)
            else:  # unused or frozen: torch leaves it (and its state) untouched
                new_p, new_state = name, state
            g.add_output(g.identity(new_p, updated(name)), "float32", list(p.shape))
            for slot, value in new_state.items():
                g.add_output(g.identity(value, updated(state[slot])), "float32", list(p.shape))
        for name, b in self.capture.buffers.items():
            value = ctx.tensor(lowered["buffer"].get(name, name), torch.float32)
            g.add_output(g.identity(value, updated(name)), "float32", list(b.shape))
        return g.to_model("train_step")

    # -- evaluation and inference -----------------------------------------------------------
    def eval(self) -> onnx.ModelProto:
        g = GraphBuilder()
        ctx = Lowering(g, seed=None)
        self._declare(g, ctx, with_target=True)
        lowered = self._lower(g, ctx, self.capture.eval)
        metrics = self._metrics(g, ctx, lowered, eval_graph=True)
        for key in self.eval_metrics():
            g.add_output(g.identity(metrics[key], key), "float32", [])
        return g.to_model("eval")

    def eval_metrics(self) -> list[str]:
        return metric_names(self.task, eval_graph=True)

    def train_metrics(self) -> list[str]:
        return ["loss"] + metric_names(self.task, eval_graph=False)

    def infer(self) -> onnx.ModelProto:
        """The eval capture's model outputs, without the loss (nor the targets)."""
        g = GraphBuilder()
        ctx = Lowering(g, seed=None)
        self._declare(g, ctx, with_target=False)
        graph = self.capture.eval
        index = [k for k, _ in graph.outputs].index("outputs")
        values = lower_graph(
            ctx, graph.gm, self._placeholders(g, ctx, graph), self._diagnose, outputs=[index]
        )
        logits = ctx.tensor(values[index], torch.float32)
        g.add_output(g.identity(logits, "logits"), "float32", list(self.output_shape))
        if self.task in ("classification", "next_word", "next_char"):
            probs = g.op("Softmax", logits, axis=-1)
            k = min(TOP_K, self.num_classes)
            top_shape = list(self.output_shape[:-1]) + [k]
            g.op("TopK", probs, g.ints(k), axis=-1, outputs=["top_scores", "top_ids"])
            g.add_output("top_scores", "float32", top_shape)
            g.add_output("top_ids", "int64", top_shape)
        elif self.task == "multilabel":
            op = "Identity" if self.label_outputs == "probabilities" else "Sigmoid"
            g.add_output(
                g.op(op, logits, outputs=["probabilities"])[0], "float32", list(self.output_shape)
            )
        return g.to_model("infer")
