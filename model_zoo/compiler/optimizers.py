"""Optimizers as graph code: SGD (momentum, Nesterov, weight decay), Adam and AdamW.

Each reproduces torch.optim's update rule for a single parameter group, so a compiled
step equals a PyTorch step. The learning rate and the step count are graph inputs: a
schedule needs no recompiling.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .gradients import Gradient, Product, dense
from .graph import GraphBuilder
from .ops.base import UnsupportedError


@dataclass(frozen=True)
class SGD:
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    name = "sgd"

    @property
    def slots(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum else ()

    @property
    def prescales_gradient(self) -> bool:
        """Plain SGD differentiates lr * loss, which saves a pass over every parameter."""
        return not self.momentum

    def emit(self, g: GraphBuilder, p: str, grad: Gradient, state: dict[str, str], lr: str,
             step: str) -> tuple[str, dict[str, str]]:
        if self.prescales_gradient:  # grad is already lr * dL/dp
            if self.weight_decay:
                p = g.op("Mul", p, _decay_factor(g, lr, self.weight_decay))
            if isinstance(grad, Product):  # p - op(a) op(b) as one Gemm, gradient never written
                return grad.gemm(g, c=p, alpha=-1.0), {}
            return g.op("Sub", p, dense(g, grad)), {}
        d = dense(g, grad)
        if self.weight_decay:
            d = g.op("Add", d, g.op("Mul", p, g.const(self.weight_decay)))
        new_state = {}
        if self.momentum:
            # torch starts the buffer at the first gradient; with dampening 0 that equals
            # a zero-initialised buffer, which the graph uses
            buf = g.op("Add", g.op("Mul", state["momentum"], g.const(self.momentum)), d)
            new_state["momentum"] = buf
            d = g.op("Add", d, g.op("Mul", buf, g.const(self.momentum))) if self.nesterov else buf
        return g.op("Sub", p, g.op("Mul", d, lr)), new_state


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015); `decoupled` gives AdamW (Loshchilov & Hutter 2019)."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False

    @property
    def name(self) -> str:
        return "adamw" if self.decoupled else "adam"

    slots = ("m", "v")
    prescales_gradient = False

    def emit(self, g: GraphBuilder, p: str, grad: Gradient, state: dict[str, str], lr: str,
             step: str) -> tuple[str, dict[str, str]]:
        grad = dense(g, grad)
        if self.weight_decay and self.decoupled:
            p = g.op("Mul", p, _decay_factor(g, lr, self.weight_decay))
        elif self.weight_decay:
            grad = g.op("Add", grad, g.op("Mul", p, g.const(self.weight_decay)))
        m = g.op("Add", state["m"], g.op("Mul", g.op("Sub", grad, state["m"]), g.const(1 - self.beta1)))
        v = g.op("Add", g.op("Mul", state["v"], g.const(self.beta2)),
                 g.op("Mul", g.op("Mul", grad, grad), g.const(1 - self.beta2)))
        bc2_sqrt, step_size = g.shared(("adam_corrections", self, lr, step),
                                       lambda: self._corrections(g, lr, step))
        denom = g.op("Add", g.op("Div", g.op("Sqrt", v), bc2_sqrt), g.const(self.eps))
        new_p = g.op("Sub", p, g.op("Mul", g.op("Div", m, denom), step_size))
        return new_p, {"m": m, "v": v}

    def _corrections(self, g: GraphBuilder, lr: str, step: str) -> tuple[str, str]:
        """(sqrt(1 - beta2^t), lr / (1 - beta1^t)) as float32 scalars, shared by all
        parameters. Computed in float64, as torch computes them in Python: 1 - beta^t
        cancels badly in float32 and the error would add up over steps."""
        t = g.op("Cast", step, to=11)
        one = g.const(1.0, "float64")
        bc1 = g.op("Sub", one, g.op("Pow", g.const(self.beta1, "float64"), t))
        bc2_sqrt = g.op("Sqrt", g.op("Sub", one, g.op("Pow", g.const(self.beta2, "float64"), t)))
        step_size = g.op("Cast", g.op("Div", g.op("Cast", lr, to=11), bc1), to=1)
        return g.op("Cast", bc2_sqrt, to=1), step_size


Optimizer = SGD | Adam


def _decay_factor(g: GraphBuilder, lr: str, weight_decay: float) -> str:
    """1 - lr * weight_decay, emitted once for all parameters."""
    return g.shared(("decay", lr, weight_decay), lambda: g.op(
        "Sub", g.const(1.0), g.op("Mul", lr, g.const(weight_decay))))


def optimizer_from_torch(opt: torch.optim.Optimizer | Optimizer) -> Optimizer:
    """Read a torch.optim optimizer (one parameter group) into its graph form."""
    if isinstance(opt, (SGD, Adam)):
        return opt
    if len(opt.param_groups) != 1:
        raise UnsupportedError("optimizers with several parameter groups")
    group = opt.param_groups[0]
    if type(opt) is torch.optim.SGD:
        if group["dampening"] or group.get("maximize"):
            raise UnsupportedError("SGD with dampening or maximize")
        return SGD(group["lr"], group["momentum"], group["weight_decay"], group["nesterov"])
    if type(opt) in (torch.optim.Adam, torch.optim.AdamW):
        if group.get("amsgrad") or group.get("maximize"):
            raise UnsupportedError("Adam with amsgrad or maximize")
        b1, b2 = group["betas"]
        return Adam(group["lr"], b1, b2, group["eps"], group["weight_decay"],
                    decoupled=type(opt) is torch.optim.AdamW)
    raise UnsupportedError(f"optimizer {type(opt).__name__}; supported: SGD, Adam, AdamW")


def describe(opt: Optimizer) -> dict:
    return {"name": opt.name, "hyperparameters": asdict(opt), "slots": list(opt.slots)}
