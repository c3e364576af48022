"""Optimizers as graph code: SGD (momentum, Nesterov, weight decay), Adam, AdamW, Adagrad
and RMSprop.

Each reproduces torch.optim's update rule for a single parameter group, so a compiled
step equals a PyTorch step. The learning rate and the step count are graph inputs: a
schedule needs no recompiling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
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

    def emit(
        self, g: GraphBuilder, p: str, grad: Gradient, state: dict[str, str], lr: str, step: str
    ) -> tuple[str, dict[str, str]]:
        if self.prescales_gradient:  # grad is already lr * dL/dp
            if self.weight_decay:
                p = g.op("Mul", p, _decay_factor(g, lr, self.weight_decay))
            if isinstance(grad, Product):  # p - op(a) op(b) as one Gemm, gradient never written
                return grad.gemm(g, c=p, alpha=-1.0), {}
            return g.op("Sub", p, dense(g, grad)), {}
        d = _with_l2_decay(g, grad, p, self.weight_decay)
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

    def emit(
        self, g: GraphBuilder, p: str, grad: Gradient, state: dict[str, str], lr: str, step: str
    ) -> tuple[str, dict[str, str]]:
        if self.weight_decay and self.decoupled:
            p = g.op("Mul", p, _decay_factor(g, lr, self.weight_decay))
        grad = _with_l2_decay(g, grad, p, 0.0 if self.decoupled else self.weight_decay)
        m = g.op(
            "Add", state["m"], g.op("Mul", g.op("Sub", grad, state["m"]), g.const(1 - self.beta1))
        )
        v = g.op(
            "Add",
            g.op("Mul", state["v"], g.const(self.beta2)),
            g.op("Mul", g.op("Mul", grad, grad), g.const(1 - self.beta2)),
        )
        bc2_sqrt, step_size = g.shared(
            ("adam_corrections", self, lr, step), lambda: self._corrections(g, lr, step)
        )
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


@dataclass(frozen=True)
class Adagrad:
    """Adagrad (Duchi et al. 2011) as torch.optim.Adagrad: the learning rate lr / (1 + (t -
    1) lr_decay), divided per element by sqrt(sum of squared gradients) + eps.

    Bundle state starts at zeros (docs/bundle-format.md) while torch starts the sum at
    `initial_accumulator_value`; the first step adds it before the first squared gradient,
    which gives torch's sum exactly (init + g * g) from then on.
    """

    lr: float = 1e-2
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10
    name = "adagrad"
    slots = ("sum",)
    prescales_gradient = False

    def emit(
        self, g: GraphBuilder, p: str, grad: Gradient, state: dict[str, str], lr: str, step: str
    ) -> tuple[str, dict[str, str]]:
        grad = _with_l2_decay(g, grad, p, self.weight_decay)
        total = state["sum"]
        if self.initial_accumulator_value:
            total = g.op(
                "Add",
                total,
                g.shared(("adagrad_initial", self, step), lambda: self._initial(g, step)),
            )
        total = g.op("Add", total, g.op("Mul", grad, grad))
        std = g.op("Add", g.op("Sqrt", total), g.const(self.eps))
        clr = g.shared(("adagrad_lr", self, lr, step), lambda: self._decayed_lr(g, lr, step))
        # torch: p.addcdiv_(grad, std, value=-clr), i.e. p + (-clr * grad) / std
        return g.op("Sub", p, g.op("Div", g.op("Mul", grad, clr), std)), {"sum": total}

    def _initial(self, g: GraphBuilder, step: str) -> str:
        """initial_accumulator_value at step 1, else 0 (float32 scalar)."""
        first = g.op("Equal", step, g.const(1, "int64"))
        return g.op("Where", first, g.const(self.initial_accumulator_value), g.const(0.0))

    def _decayed_lr(self, g: GraphBuilder, lr: str, step: str) -> str:
        """lr / (1 + (t - 1) lr_decay) as a float32 scalar, computed in float64 as torch
        computes it in Python."""
        if not self.lr_decay:
            return lr
        t = g.op("Cast", step, to=11)
        one = g.const(1.0, "float64")
        decay = g.op(
            "Add", one, g.op("Mul", g.op("Sub", t, one), g.const(self.lr_decay, "float64"))
        )
        return g.op("Cast", g.op("Div", g.op("Cast", lr, to=11), decay), to=1)


@dataclass(frozen=True)
class RMSprop:
    """RMSprop (Hinton, Srivastava & Swersky 2012, lecture 6e; `centered` after Graves 2013)
    as torch.optim.RMSprop: the gradient divided per element by sqrt of a running mean of
    its square (minus the square of its running mean when centered) + eps, then optionally
    accumulated with momentum."""

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    name = "rmsprop"
    prescales_gradient = False

    @property
    def slots(self) -> tuple[str, ...]:
        return (
            ("square_avg",)
            + (("grad_avg",) if self.centered else ())
            + (("momentum",) if self.momentum else ())
        )

    def emit(
        self, g: GraphBuilder, p: str, grad: Gradient, state: dict[str, str], lr: str, step: str
    ) -> tuple[str, dict[str, str]]:
        grad = _with_l2_decay(g, grad, p, self.weight_decay)
        # the operation order of torch's kernels: sq * alpha + ((1 - alpha) * g) * g
        square_avg = g.op(
            "Add",
            g.op("Mul", state["square_avg"], g.const(self.alpha)),
            g.op("Mul", g.op("Mul", grad, g.const(1 - self.alpha)), grad),
        )
        new_state = {"square_avg": square_avg}
        if self.centered:
            grad_avg = _lerp(g, state["grad_avg"], grad, 1 - self.alpha)
            new_state["grad_avg"] = grad_avg
            variance = g.op("Sub", square_avg, g.op("Mul", grad_avg, grad_avg))
            avg = g.op("Add", g.op("Sqrt", variance), g.const(self.eps))
        else:
            avg = g.op("Add", g.op("Sqrt", square_avg), g.const(self.eps))
        if self.momentum:
            buf = g.op(
                "Add",
                g.op("Mul", state["momentum"], g.const(self.momentum)),
                g.op("Div", grad, avg),
            )
            new_state["momentum"] = buf
            return g.op("Sub", p, g.op("Mul", buf, lr)), new_state
        return g.op("Sub", p, g.op("Div", g.op("Mul", grad, lr), avg)), new_state


def _lerp(g: GraphBuilder, start: str, end: str, weight: float) -> str:
    """start + weight (end - start), in the form torch.lerp takes for this weight (the
    other form for weight >= 0.5 keeps the result exact at weight 1)."""
    w = np.float32(weight)
    diff = g.op("Sub", end, start)
    if w < 0.5:
        return g.op("Add", start, g.op("Mul", diff, g.const(w)))
    return g.op("Sub", end, g.op("Mul", diff, g.const(np.float32(1) - w)))


Optimizer = SGD | Adam | Adagrad | RMSprop


def _with_l2_decay(g: GraphBuilder, grad: Gradient, p: str, weight_decay: float) -> str:
    """The gradient written out, plus weight_decay * p when weight_decay is not 0 (the
    L2 penalty torch's optimizers add to the gradient, in their order: grad + p * wd)."""
    grad = dense(g, grad)
    if not weight_decay:
        return grad
    return g.op("Add", grad, g.op("Mul", p, g.const(weight_decay)))


def _decay_factor(g: GraphBuilder, lr: str, weight_decay: float) -> str:
    """1 - lr * weight_decay, emitted once for all parameters."""
    return g.shared(
        ("decay", lr, weight_decay),
        lambda: g.op("Sub", g.const(1.0), g.op("Mul", lr, g.const(weight_decay))),
    )


def optimizer_from_torch(opt: torch.optim.Optimizer | Optimizer) -> Optimizer:
    """Read a torch.optim optimizer (one parameter group) into its graph form."""
    if isinstance(opt, (SGD, Adam, Adagrad, RMSprop)):
        return opt
    if len(opt.param_groups) != 1:
        raise UnsupportedError("optimizers with several parameter groups")
    read = _FROM_TORCH.get(type(opt))
    if read is None:
        raise UnsupportedError(
            f"optimizer {type(opt).__name__}; supported: "
            f"{', '.join(t.__name__ for t in _FROM_TORCH)}"
        )
    group = opt.param_groups[0]
    if group.get("maximize"):
        raise UnsupportedError(f"{type(opt).__name__} with maximize")
    return read(type(opt), group)


def _from_group(cls: type, group: dict, **read: object) -> Optimizer:
    """`cls` with each field torch's parameter group holds under the same name, and the
    fields the caller `read` otherwise."""
    names = [f.name for f in fields(cls) if f.name not in read]
    return cls(**{n: group[n] for n in names}, **read)


def _sgd_from_torch(kind: type, group: dict) -> SGD:
    if group["dampening"]:
        raise UnsupportedError("SGD with dampening")
    return _from_group(SGD, group)


def _adam_from_torch(kind: type, group: dict) -> Adam:
    if group.get("amsgrad"):
        raise UnsupportedError("Adam with amsgrad")
    b1, b2 = group["betas"]
    return _from_group(Adam, group, beta1=b1, beta2=b2, decoupled=kind is torch.optim.AdamW)


def _same_names_from_torch(kind: type, group: dict) -> Optimizer:
    return _from_group(_FROM_TORCH_CLASS[kind], group)


_FROM_TORCH_CLASS = {torch.optim.Adagrad: Adagrad, torch.optim.RMSprop: RMSprop}


# one entry per torch optimizer the compiler reads
_FROM_TORCH: dict[type, Callable[[type, dict], Optimizer]] = {
    torch.optim.SGD: _sgd_from_torch,
    torch.optim.Adam: _adam_from_torch,
    torch.optim.AdamW: _adam_from_torch,
    torch.optim.Adagrad: _same_names_from_torch,
    torch.optim.RMSprop: _same_names_from_torch,
}


def describe(opt: Optimizer) -> dict:
    return {"name": opt.name, "hyperparameters": asdict(opt), "slots": list(opt.slots)}
