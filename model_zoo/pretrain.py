"""Central pre-training of a token model on public text, in PyTorch, before it is compiled:
the starting point production keyboards give federated training (Hard et al. 2018 start
from a model trained on public logs; Wang et al. 2023, "Can Public Large Language Models
Help Private Cross-device Federated Learning?", pre-train on public text and fine-tune
federated).

Examples are the fleet's own form, {"tokens" | "chars": int64 [T], "targets": int64 [T]},
so the same encoder that feeds the devices feeds this loop. Adam is used here (the
bundle's train step keeps the optimizer the devices run): it reaches a useful model in
far fewer passes over the public text than plain SGD.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def pad_batch(examples: list[dict], input_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 inputs and targets [B, T_max], right-padded with 0 (the padding id)."""
    length = max(len(e["targets"]) for e in examples)
    x = np.zeros((len(examples), length), np.int64)
    y = np.zeros((len(examples), length), np.int64)
    for i, e in enumerate(examples):
        x[i, : len(e[input_name])] = e[input_name]
        y[i, : len(e["targets"])] = e["targets"]
    return torch.from_numpy(x), torch.from_numpy(y)


def length_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50
) -> list[np.ndarray]:
    """Indices in batches of similar length (less padding: a batch costs its longest
    example): shuffle, sort within pools of `pool` batches, cut, shuffle the batches."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = order[start : start + pool * batch_size]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pretrain(
    module: nn.Module,
    examples: list[dict],
    *,
    input_name: str,
    epochs: int,
    batch_size: int,
    lr: float,
    clip_grad_norm: float | None,
    seed: int,
    threads: int | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train `module` in place (next-token cross-entropy, padding 0 ignored) on
        `examples` with Adam for `epochs` passes, reshuffled each pass by `seed` (batches of
    similar length, length_batches).
        `on_step(step, steps, loss)` is called after every optimizer step. Returns
        {"steps", "seconds", "final_loss" (mean over the last pass)}."""
    if threads:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=0)
    lengths = np.array([len(e["targets"]) for e in examples])
    per_epoch = -(-len(examples) // batch_size)
    steps, started = epochs * per_epoch, time.perf_counter()
    module.train()
    step, losses = 0, []
    for _ in range(epochs):
        losses = []
        for batch in length_batches(lengths, batch_size, rng):
            x, y = pad_batch([examples[i] for i in batch], input_name)
            logits = module(x)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(module.parameters(), clip_grad_norm)
            optimizer.step()
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, steps, losses[-1])
    return {
        "steps": step,
        "seconds": time.perf_counter() - started,
        "final_loss": float(np.mean(losses)) if losses else float("nan"),
    }


__all__ = ["length_batches", "pad_batch", "pretrain"]
