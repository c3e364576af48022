"""Test helper: drive a bundle's graphs with plain onnxruntime and a PyTorch twin."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from model_zoo.compiler import compile_bundle


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtTrainer:
    """Runs train_step.onnx step after step, carrying parameters and optimizer state."""

    def __init__(self, bundle: Path):
        self.manifest = json.loads((bundle / "manifest.json").read_text())
        self.sess = session(bundle / "train_step.onnx")
        self.output_names = [o.name for o in self.sess.get_outputs()]
        with np.load(bundle / "parameters.npz", allow_pickle=False) as npz:
            self.params = {k: npz[k] for k in npz.files}
        self.state = {
            s["name"]: np.zeros_like(self.params[s["like"]])
            for s in self.manifest["optimizer"]["state"]
        }
        self.steps = 0

    def step(self, batch: dict[str, np.ndarray], lr: float, seed: int = 0) -> dict:
        self.steps += 1
        feeds = dict(batch) | self.params | self.state
        feeds["lr"] = np.array(lr, np.float32)
        feeds["step"] = np.array(self.steps, np.int64)
        if self.manifest["uses_seed"]:
            feeds["seed"] = np.array(seed, np.int64)
        outs = dict(zip(self.output_names, self.sess.run(None, feeds)))
        self.params = {k: outs[f"new.{k}"] for k in self.params}
        self.state = {k: outs[f"new.{k}"] for k in self.state}
        return outs


def torch_step(
    model,
    optimizer,
    loss_fn,
    batch: dict[str, torch.Tensor],
    clip_grad_norm: float | None = None,
    flatten: bool = True,
) -> float:
    """One PyTorch step; `flatten`: the loss takes [N, C] logits and [N] targets (how
    compile_bundle applies cross-entropy to sequence models), else outputs and targets
    as the model returns them."""
    optimizer.zero_grad()
    logits = model(**{k: v for k, v in batch.items() if k != "targets"})
    if flatten:
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1))
    else:
        loss = loss_fn(logits, batch["targets"])
    loss.backward()
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    return float(loss.detach())


def assert_steps_match(
    model,
    make_optimizer,
    loss_fn,
    batches,
    out: Path,
    steps: int = 20,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    clip_grad_norm: float | None = None,
    flatten: bool = True,
    **compile_kwargs,
):
    """Compile `model`, then train the bundle and the PyTorch model on the same batches,
    with a float64 copy of the PyTorch model alongside as the exact trajectory.

    Every step's loss must match PyTorch float32 or PyTorch float64 within rtol 1e-4, and
    every parameter must match PyTorch float32 within (rtol, atol). Two float32 programs
    that sum in different orders amplify different rounding: Adam's m / sqrt(v) does so in
    near-zero gradients, and on some CPUs PyTorch's float32 convolutions stray ~1e-3 from
    the float64 run within 20 SGD steps while the bundle stays within 1e-6 of it. So an
    element off PyTorch float32 passes only if the bundle's distance from the float64 run
    is within tolerance plus three times PyTorch float32's own largest distance from it
    (the float32 noise floor), and elements within tolerance of neither run are rare
    (< 0.1%). The floor is the whole model's, not each tensor's: onnxruntime's CPU Tanh and
    Sigmoid are approximations (on an AMD EPYC: Tanh 2.7e-7 absolute error, PyTorch 3e-8)
    and one unit's gate error reaches every tensor its gradient flows through, so a tensor
    PyTorch happens to get nearly exact (a bias) would otherwise set a floor below the
    runtime's own rounding.

    Buffers the step updates (BatchNorm running statistics) are checked like parameters.
    `flatten` is torch_step's; compile_kwargs go to compile_bundle (path, task, ...).
    """
    twin = copy.deepcopy(model)
    exact = copy.deepcopy(model).double()
    exact_loss_fn = (
        copy.deepcopy(loss_fn).double() if isinstance(loss_fn, torch.nn.Module) else loss_fn
    )
    bundle = compile_bundle(
        twin,
        batches[0],
        loss=loss_fn,
        optimizer=make_optimizer(twin.parameters()),
        out=out,
        clip_grad_norm=clip_grad_norm,
        **compile_kwargs,
    )
    trainer = OrtTrainer(bundle)
    optimizer = make_optimizer(model.parameters())
    exact_optimizer = make_optimizer(exact.parameters())
    lr = optimizer.param_groups[0]["lr"]
    for i in range(steps):
        batch = batches[i % len(batches)]
        outs = trainer.step({k: v.numpy() for k, v in batch.items()}, lr)
        torch_loss = torch_step(model, optimizer, loss_fn, batch, clip_grad_norm, flatten)
        exact_loss = torch_step(
            exact, exact_optimizer, exact_loss_fn, _double(batch), clip_grad_norm, flatten
        )
        ours = float(outs["loss"])
        assert any(
            np.isclose(ours, ref, rtol=1e-4, atol=1e-5) for ref in (torch_loss, exact_loss)
        ), f"loss at step {i}: bundle {ours}, PyTorch float32 {torch_loss}, float64 {exact_loss}"
    carried = {s["name"] for s in trainer.manifest.get("buffers", [])}
    reference = dict(model.named_parameters()) | {
        n: b for n, b in model.named_buffers() if n in carried
    }
    exact_params = {name: p.detach().numpy() for name, p in exact.named_parameters()} | {
        n: b.detach().numpy() for n, b in exact.named_buffers() if n in carried
    }
    noise_floor = max(
        float(np.max(np.abs(p.detach().numpy() - exact_params[name])))
        for name, p in reference.items()
    )
    for name, p in reference.items():
        bad = ~np.isclose(trainer.params[name], p.detach().numpy(), rtol=rtol, atol=atol)
        if not bad.any():
            continue
        truth = exact_params[name]
        ours, truth = trainer.params[name][bad], truth[bad]
        allowed = atol + rtol * np.abs(truth) + 3 * noise_floor
        worst = np.max(np.abs(ours - truth) - allowed)
        assert worst <= 0, (
            f"parameter {name} after {steps} steps: {bad.sum()} elements "
            f"differ from PyTorch beyond tolerance and beyond the float32 "
            f"noise floor (excess {worst:.3g})"
        )
        off_both = ~np.isclose(ours, truth, rtol=rtol, atol=atol)
        assert off_both.sum() < 1e-3 * bad.size, (
            f"parameter {name}: {off_both.sum()} elements off both PyTorch runs"
        )
    return bundle, trainer


def assert_zoo_steps_match(entry, model, make_optimizer, batches, out: Path, **kwargs):
    """`assert_steps_match` for `model` built from a zoo entry: the entry's loss and its
    gradient clipping (`kwargs` as `assert_steps_match`'s)."""
    assert_steps_match(
        model,
        make_optimizer,
        entry.loss(),
        batches,
        out,
        clip_grad_norm=entry.clip_grad_norm,
        **kwargs,
    )


def _double(batch: dict) -> dict:
    return {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
