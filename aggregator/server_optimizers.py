"""Server optimizers on the aggregated pseudo-gradient, the mean delta (Reddi et al. 2021,
"Adaptive Federated Optimization"): FedAvg, FedAvgM, FedAdam, FedYogi.

`step(parameters, mean_delta, state) -> (new parameters, new state)` returns new arrays
and never mutates its inputs; state is a dict of arrays a store can persist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class FedAvg:
    lr: float = 1.0

    def step(self, params: Params, delta: Params, state: Params) -> tuple[Params, Params]:
        return {k: (params[k] + self.lr * delta[k]).astype(np.float32) for k in params}, {}


@dataclass(frozen=True)
class FedAvgM:
    """Server momentum (Hsu et al. 2019)."""

    lr: float = 1.0
    momentum: float = 0.9

    def step(self, params, delta, state):
        m = {k: self.momentum * state.get(f"m.{k}", 0.0) + delta[k] for k in params}
        new = {k: (params[k] + self.lr * m[k]).astype(np.float32) for k in params}
        return new, {f"m.{k}": v.astype(np.float32) for k, v in m.items()}


@dataclass(frozen=True)
class FedAdam:
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    yogi: bool = False

    def step(self, params, delta, state):
        new_params, new_state = {}, {}
        for k in params:
            d = delta[k].astype(np.float64)
            m = self.beta1 * state.get(f"m.{k}", 0.0) + (1 - self.beta1) * d
            v_prev = state.get(f"v.{k}", np.full(d.shape, self.tau**2))
            if self.yogi:  # v - (1 - b2) d^2 sign(v - d^2)
                v = v_prev - (1 - self.beta2) * d * d * np.sign(v_prev - d * d)
            else:
                v = self.beta2 * v_prev + (1 - self.beta2) * d * d
            new_params[k] = (params[k] + self.lr * m / (np.sqrt(v) + self.tau)).astype(np.float32)
            new_state[f"m.{k}"], new_state[f"v.{k}"] = m.astype(np.float32), v.astype(np.float32)
        return new_params, new_state


def FedYogi(**kw) -> FedAdam:  # noqa: N802 - reads as the algorithm's name
    return FedAdam(yogi=True, **kw)


SERVER_OPTIMIZERS = {"fedavg": FedAvg, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi}
"""The registry: a task's `server_optimizer` names one of these."""


def build_server_optimizer(name: str, **settings):
    if name not in SERVER_OPTIMIZERS:
        raise ValueError(
            f"server optimizer must be one of {sorted(SERVER_OPTIMIZERS)}, got {name!r}"
        )
    return SERVER_OPTIMIZERS[name](**settings)
