"""compile_bundle: a PyTorch module + loss + optimizer -> a training bundle directory.

The bundle format is documented in docs/bundle-format.md.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .graph import OPSET
from .graphs import GraphPlan, spec_from_tensor, state_name
from .losses import CrossEntropy
from .ops.base import UnsupportedError
from .optimizers import Optimizer, describe, optimizer_from_torch
from .trace import trace

FORMAT_VERSION = 1
GRAPH_FILES = {"train_step": "train_step.onnx", "eval": "eval.onnx", "infer": "infer.onnx"}


def compile_bundle(module: nn.Module, sample_batch: dict[str, torch.Tensor], *,
                   loss: nn.Module | CrossEntropy, optimizer: torch.optim.Optimizer | Optimizer,
                   out: str | Path, model_name: str | None = None, task: str = "classification",
                   vocabulary: dict | None = None, target: str = "targets",
                   sequence_dims: bool | None = None,
                   clip_grad_norm: float | None = None) -> Path:
    """Write the training bundle for `module` to `out`; returns the directory.

    sample_batch: the model's inputs by forward-parameter name plus the targets under
    `target`. Dimension 0 of every tensor is the dynamic "batch"; with `sequence_dims`
    (default: when the targets are rank 2, i.e. one target per position) dimension 1 of
    the rank-2 inputs and the targets is the dynamic "seq".
    vocabulary: the tokenizer's JSON document, stored as vocabulary.json.
    clip_grad_norm: clip the gradients' global L2 norm before the update, as
    torch.nn.utils.clip_grad_norm_ does (recurrent models want it).
    """
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm}")
    module = module.train()
    if target not in sample_batch:
        raise ValueError(f"sample_batch has no targets under {target!r}")
    program = trace(module, {k: v for k, v in sample_batch.items() if k != target})
    loss_spec = loss if isinstance(loss, CrossEntropy) else CrossEntropy.from_torch(loss)
    opt = optimizer_from_torch(optimizer)
    targets = sample_batch[target]
    if sequence_dims is None:
        sequence_dims = targets.dim() == 2
    dims = {0: "batch", 1: "seq"} if sequence_dims else {0: "batch"}

    def dynamic(t: torch.Tensor) -> dict[int, str]:
        return dims if t.dim() == 2 and not t.is_floating_point() else {0: "batch"}

    inputs = [spec_from_tensor(n, sample_batch[n], dynamic(sample_batch[n]))
              for n in program.input_names]
    with torch.no_grad():
        logits = module(**{n: sample_batch[n] for n in program.input_names})
    if not isinstance(logits, torch.Tensor):
        raise UnsupportedError("the module must return one logits tensor")
    plan = GraphPlan(program, loss_spec, opt, inputs,
                     spec_from_tensor(target, targets, dynamic(targets)),
                     num_classes=logits.shape[-1], sequence_model=sequence_dims,
                     clip_grad_norm=clip_grad_norm)
    graphs = {"train_step": plan.train_step(), "eval": plan.eval(), "infer": plan.infer()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = {n: p.detach().cpu().numpy().astype(np.float32) for n, p in program.parameters.items()}
    blobs = {}
    for key, model in graphs.items():
        onnx.checker.check_model(model)
        blobs[GRAPH_FILES[key]] = model.SerializeToString()
    blobs["parameters.npz"] = _npz_bytes(params)
    if vocabulary is not None:
        blobs["vocabulary.json"] = json.dumps(vocabulary, sort_keys=True).encode()
    for filename, data in blobs.items():
        (out / filename).write_bytes(data)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_id": _content_hash(blobs, params),
        "model_name": model_name or type(module).__name__,
        "task": task,
        "opset": OPSET,
        "parameters": [{"name": n, "shape": list(a.shape), "dtype": "float32"}
                       for n, a in params.items()],
        "inputs": {s.name: s.to_json() for s in inputs},
        "targets": {plan.target.name: plan.target.to_json()},
        "num_classes": int(logits.shape[-1]),
        "ignore_index": loss_spec.ignore_index,
        "optimizer": describe(opt) | {"state": [
            {"name": state_name(opt, slot, n), "like": n, "init": "zeros"}
            for n in params for slot in opt.slots]},
        "uses_seed": program.uses_dropout,
        "clip_grad_norm": clip_grad_norm,
        "graphs": GRAPH_FILES,
        "metrics": {"train_step": ["loss", "loss_sum", "correct", "count"],
                    "eval": plan.eval_metrics()},
        "parameters_file": "parameters.npz",
        "vocabulary": "vocabulary.json" if vocabulary is not None else None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _content_hash(blobs: dict[str, bytes], params: dict[str, np.ndarray]) -> str:
    """sha256 over the files and the parameter values: equal bundles get equal model ids.

    Parameters are hashed by value (name, shape, bytes), not as the npz file, whose zip
    headers carry timestamps.
    """
    h = hashlib.sha256()
    for name in sorted(blobs):
        if name != "parameters.npz":
            h.update(name.encode() + b"\0" + hashlib.sha256(blobs[name]).digest())
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode() + hashlib.sha256(a.tobytes()).digest())
    return h.hexdigest()
