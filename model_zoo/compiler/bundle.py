"""compile_bundle: a PyTorch module + loss + optimizer -> a training bundle directory.

The bundle format is documented in docs/bundle-format.md.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .aten.capture import capture
from .aten.metrics import TASKS
from .aten.plan import GeneralPlan
from .graph import OPSET
from .graphs import GraphPlan, spec_from_tensor, state_name
from .losses import CrossEntropy
from .ops.base import UnsupportedError
from .optimizers import Optimizer, describe, optimizer_from_torch
from .trace import trace

FORMAT_VERSION = 1
GRAPH_FILES = {"train_step": "train_step.onnx", "eval": "eval.onnx", "infer": "infer.onnx"}


PATHS = ("auto", "fast", "general")


@dataclass(frozen=True)
class _Request:
    """What compile_bundle was asked for (validated), handed to either path."""

    module: nn.Module
    sample_batch: dict[str, torch.Tensor]
    loss: object
    optimizer: torch.optim.Optimizer | Optimizer
    out: Path
    model_name: str | None
    task: str
    vocabulary: dict | None
    target: str
    sequence_dims: bool | None
    clip_grad_norm: float | None


def compile_bundle(
    module: nn.Module,
    sample_batch: dict[str, torch.Tensor],
    *,
    loss,
    optimizer: torch.optim.Optimizer | Optimizer,
    out: str | Path,
    model_name: str | None = None,
    task: str | None = None,
    vocabulary: dict | None = None,
    target: str = "targets",
    sequence_dims: bool | None = None,
    clip_grad_norm: float | None = None,
    dynamic_dims: dict[str, dict[int, str]] | None = None,
    path: str = "auto",
) -> Path:
    """Write the training bundle for `module` to `out`; returns the directory.

    sample_batch: the model's inputs by forward-parameter name plus the targets under
    `target`. Dimension 0 of every tensor is the dynamic "batch"; with `sequence_dims`
    (default: when the targets are rank 2 integers, i.e. one target per position)
    dimension 1 of the rank-2 integer inputs and the targets is the dynamic "seq".
    `dynamic_dims` overrides this per tensor name: {name: {dim index: dimension name}}
    (the general path only; e.g. {"x": {0: "batch", 1: "seq"}} for float sequences).
    loss: a torch loss module or any function (outputs, targets) -> scalar loss.
    task: classification, next_word, next_char, multilabel or regression (default:
    from the loss: regression for MSE/L1/SmoothL1/Huber, multilabel for BCE).
    vocabulary: the tokenizer's JSON document, stored as vocabulary.json.
    clip_grad_norm: clip the gradients' global L2 norm before the update, as
    torch.nn.utils.clip_grad_norm_ does (recurrent models want it).
    path: "fast" (the hand-written lowerings: the zoo's layers, cross-entropy), "general"
    (any step torch.export captures, lowered op by op; see docs/compiler.md) or "auto"
    (fast when every call has a hand-written lowering, else general).
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm}")
    if target not in sample_batch:
        raise ValueError(f"sample_batch has no targets under {target!r}")
    task = task or default_task(loss)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    request = _Request(
        module,
        sample_batch,
        loss,
        optimizer,
        Path(out),
        model_name,
        task,
        vocabulary,
        target,
        sequence_dims,
        clip_grad_norm,
    )
    if path in ("auto", "fast"):
        # the fast path's shape pass runs the model in train mode, which updates buffers
        # (BatchNorm statistics, or an EMA the model keeps, with autograd history when
        # the model updates it under no_grad): a failed attempt must leave the module as
        # it was, so the buffers it held are put back
        buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
        try:
            return _compile_fast(request)
        except Exception:  # fx cannot trace it (control flow, ...) or no lowering
            if path == "fast":
                raise
            for name, value in buffers.items():
                owner, _, attr = name.rpartition(".")
                module.get_submodule(owner)._buffers[attr] = value
    return _compile_general(request, dynamic_dims)


def default_task(loss) -> str:
    if isinstance(loss, (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss)):
        return "regression"
    if isinstance(
        loss,
        (nn.BCEWithLogitsLoss, nn.BCELoss, nn.MultiLabelSoftMarginLoss, nn.SoftMarginLoss),
    ):
        return "multilabel"
    return "classification"


def multilabel_reading(loss) -> tuple[str, float]:
    """How a multi-label loss reads the model: its outputs ("probabilities" for BCELoss,
    "logits" for the others) and the target value above which a label is positive
    (SoftMarginLoss's labels are -1 and 1, the others' 0 and 1)."""
    outputs = "probabilities" if isinstance(loss, nn.BCELoss) else "logits"
    return outputs, 0.0 if isinstance(loss, nn.SoftMarginLoss) else 0.5


def _compile_fast(req: _Request) -> Path:
    module, sample_batch, loss, target = req.module, req.sample_batch, req.loss, req.target
    task, sequence_dims = req.task, req.sequence_dims
    if task not in ("classification", "next_word", "next_char"):
        raise UnsupportedError(f"task {task} on the fast path")
    module = module.train()
    program = trace(module, {k: v for k, v in sample_batch.items() if k != target})
    loss_spec = loss if isinstance(loss, CrossEntropy) else CrossEntropy.from_torch(loss)
    opt = optimizer_from_torch(req.optimizer)
    targets = sample_batch[target]
    if sequence_dims is None:
        sequence_dims = targets.dim() == 2
    dims = {0: "batch", 1: "seq"} if sequence_dims else {0: "batch"}

    def dynamic(t: torch.Tensor) -> dict[int, str]:
        return dims if t.dim() == 2 and not t.is_floating_point() else {0: "batch"}

    inputs = [
        spec_from_tensor(n, sample_batch[n], dynamic(sample_batch[n])) for n in program.input_names
    ]
    with torch.no_grad():
        logits = module(**{n: sample_batch[n] for n in program.input_names})
    if not isinstance(logits, torch.Tensor):
        raise UnsupportedError("the module must return one logits tensor")
    plan = GraphPlan(
        program,
        loss_spec,
        opt,
        inputs,
        spec_from_tensor(target, targets, dynamic(targets)),
        num_classes=logits.shape[-1],
        sequence_model=sequence_dims,
        clip_grad_norm=req.clip_grad_norm,
    )
    graphs = {"train_step": plan.train_step(), "eval": plan.eval(), "infer": plan.infer()}
    params = {n: p.detach().cpu().numpy().astype(np.float32) for n, p in program.parameters.items()}
    return _write(
        req,
        graphs,
        params,
        {},
        _fields(
            req,
            opt,
            params,
            inputs={s.name: s.to_json() for s in inputs},
            targets={plan.target.name: plan.target.to_json()},
            num_classes=int(logits.shape[-1]),
            ignore_index=loss_spec.ignore_index,
            uses_seed=program.uses_dropout,
            metrics={
                "train_step": ["loss", "loss_sum", "correct", "count"],
                "eval": plan.eval_metrics(),
            },
        ),
    )


def _compile_general(req: _Request, dynamic_dims: dict | None) -> Path:
    module, sample_batch, loss, target = req.module, req.sample_batch, req.loss, req.target
    sequence_dims = req.sequence_dims
    opt = optimizer_from_torch(req.optimizer)
    loss_fn = loss.to_torch() if isinstance(loss, CrossEntropy) else loss
    targets = sample_batch[target]
    inputs = {k: v for k, v in sample_batch.items() if k != target}
    forward_names = list(inspect.signature(module.forward).parameters)
    missing = [n for n in inputs if n not in forward_names]
    if missing:
        raise ValueError(
            f"sample batch holds {missing}, which forward does not take (it takes {forward_names})"
        )
    if sequence_dims is None:
        sequence_dims = targets.dim() == 2 and not targets.is_floating_point()
    dims = {0: "batch", 1: "seq"} if sequence_dims else {0: "batch"}

    def default_dims(t: torch.Tensor) -> dict[int, str]:
        return dims if t.dim() == 2 and not t.is_floating_point() else {0: "batch"}

    dynamic = {n: default_dims(t) for n, t in inputs.items()}
    dynamic[target] = default_dims(targets) if not (sequence_dims and targets.dim() == 2) else dims
    dynamic.update(dynamic_dims or {})
    flatten = (
        isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss))
        and targets.dim() >= 2
        and not targets.is_floating_point()
    )
    module = module.train()
    dims_by_input = {n: d for n, d in dynamic.items() if n != target}
    cap = capture(
        module, loss_fn, inputs, targets, dims_by_input | {"__target__": dynamic[target]}, flatten
    )
    in_specs = [spec_from_tensor(n, t, dynamic[n]) for n, t in inputs.items()]
    target_spec = spec_from_tensor(target, targets, dynamic[target])
    with torch.no_grad():
        was = module.training
        outputs = module.eval()(**inputs)
        module.train(was)
    out_dims = {0: "batch"} | ({1: "seq"} if sequence_dims and outputs.dim() >= 3 else {})
    output_shape = list(spec_from_tensor("logits", outputs, out_dims).shape)
    ignore_index = int(getattr(loss_fn, "ignore_index", -100))
    plan = GeneralPlan(
        cap, opt, in_specs, target_spec, output_shape, req.task, ignore_index, req.clip_grad_norm
    )
    plan.label_outputs, plan.label_target_threshold = multilabel_reading(loss_fn)
    graphs = {"train_step": plan.train_step(), "eval": plan.eval(), "infer": plan.infer()}
    params = {n: p.detach().cpu().numpy().astype(np.float32) for n, p in cap.parameters.items()}
    buffers = {n: b.detach().cpu().numpy().astype(np.float32) for n, b in cap.buffers.items()}
    _check_batch_is_dynamic(graphs["train_step"], sample_batch, params | buffers, plan)
    return _write(
        req,
        graphs,
        params,
        buffers,
        _fields(
            req,
            opt,
            params,
            inputs={s.name: s.to_json() for s in in_specs},
            targets={target_spec.name: target_spec.to_json()},
            num_classes=plan.num_classes,
            ignore_index=ignore_index,
            uses_seed=plan.uses_seed,
            metrics={"train_step": plan.train_metrics(), "eval": plan.eval_metrics()},
            buffers=[
                {"name": n, "shape": list(b.shape), "dtype": "float32"} for n, b in buffers.items()
            ],
        ),
    )


def _fields(req: _Request, opt: Optimizer, params: dict, **by_path) -> dict:
    """The manifest fields both paths write the same way, then the ones each computes."""
    state = [
        {"name": state_name(opt, slot, n), "like": n, "init": "zeros"}
        for n in params
        for slot in opt.slots
    ]
    return {
        "model_name": req.model_name or type(req.module).__name__,
        "task": req.task,
        "optimizer": describe(opt) | {"state": state},
        "clip_grad_norm": req.clip_grad_norm,
    } | by_path


def _check_batch_is_dynamic(
    model: onnx.ModelProto,
    sample_batch: dict[str, torch.Tensor],
    state: dict[str, np.ndarray],
    plan: GeneralPlan,
) -> None:
    """Run the train step once at twice the sample's batch size (learning rate 0).

    Some PyTorch decompositions fix a size that was meant to stay dynamic without
    telling export (seen: constant padding before a flatten); the graph then fails at
    any other batch size. Better refused here than on the devices."""
    import onnxruntime as ort

    feeds = {n: np.concatenate([t.numpy(), t.numpy()]) for n, t in sample_batch.items()}
    feeds |= state | {
        s: np.zeros_like(state[p])
        for p in plan.capture.parameters
        for s in [state_name(plan.optimizer, slot, p) for slot in plan.optimizer.slots]
    }
    feeds |= {"lr": np.array(0.0, np.float32), "step": np.array(1, np.int64)}
    if plan.uses_seed:
        feeds["seed"] = np.array(0, np.int64)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        session.run(["loss"], feeds)
    except Exception as e:  # onnxruntime's errors have no common base
        raise UnsupportedError(
            f"the train step fails at another batch size than the sample's "
            f"(PyTorch fixed the batch size while capturing, e.g. constant "
            f"padding before a flatten, or an op was mis-lowered): "
            f"{str(e)[:300]}"
        ) from None


def _write(
    req: _Request,
    graphs: dict,
    params: dict[str, np.ndarray],
    buffers: dict[str, np.ndarray],
    fields: dict,
) -> Path:
    """Check and write the graphs, parameters (and buffers) and the manifest."""
    out, vocabulary = req.out, req.vocabulary
    out.mkdir(parents=True, exist_ok=True)
    blobs = {}
    for key, model in graphs.items():
        onnx.checker.check_model(model)
        blobs[GRAPH_FILES[key]] = model.SerializeToString()
    state = params | buffers  # buffers travel with the parameters (docs/bundle-format.md)
    blobs["parameters.npz"] = _npz_bytes(state)
    if vocabulary is not None:
        blobs["vocabulary.json"] = json.dumps(vocabulary, sort_keys=True).encode()
    for filename, data in blobs.items():
        (out / filename).write_bytes(data)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_id": _content_hash(blobs, state),
        "model_name": fields.pop("model_name"),
        "task": fields.pop("task"),
        "opset": OPSET,
        "parameters": [
            {"name": n, "shape": list(a.shape), "dtype": "float32"} for n, a in state.items()
        ],
    }
    manifest |= {
        k: fields.pop(k)
        for k in (
            "inputs",
            "targets",
            "num_classes",
            "ignore_index",
            "optimizer",
            "uses_seed",
            "clip_grad_norm",
        )
    }
    manifest["graphs"] = GRAPH_FILES
    manifest["metrics"] = fields.pop("metrics")
    manifest["parameters_file"] = "parameters.npz"
    manifest["vocabulary"] = "vocabulary.json" if vocabulary is not None else None
    manifest |= fields  # general path: "buffers"
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
