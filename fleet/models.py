"""The model a simulation trains, from its config: a zoo name, "package.module:factory"
(a callable returning a PyTorch module, compiled here with the loss and optimizer the
config names), or a bundle directory compiled before. Either way sized to the data: the
factory is called with whichever of `num_classes`, `vocab_size`, `vocabulary_size`,
`features` and `input_shape` it accepts (config `model_options` add or override).

torch is imported only when a model is compiled: a bundle directory needs none.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from edge_sdk.bundle import Bundle

from .datasets.base import Task
from .datasets.registry import nearest

OPTIMIZERS = {
    "sgd": ("SGD", ("lr", "momentum", "weight_decay", "nesterov")),
    "adam": ("Adam", ("lr", "betas", "eps", "weight_decay")),
    "adamw": ("AdamW", ("lr", "betas", "eps", "weight_decay")),
}
LOSSES = ("cross_entropy", "mse")
SAMPLE_BATCH, SAMPLE_SEQ = 8, 20


class ModelError(ValueError):
    """A model that cannot be built or does not fit the data; says which and why."""


def is_bundle_dir(model: str) -> bool:
    return (Path(model) / "manifest.json").is_file()


def is_factory(model: str) -> bool:
    return ":" in model and not is_bundle_dir(model)


def check_optimizer(doc: dict | None, where: str = "optimizer") -> None:
    if doc is None:
        return
    if not isinstance(doc, dict) or doc.get("name") not in OPTIMIZERS:
        name = doc.get("name") if isinstance(doc, dict) else doc
        raise ValueError(
            f"{where}.name must be one of {', '.join(OPTIMIZERS)}, got {name!r}"
            f"{nearest(name, OPTIMIZERS)}"
        )
    valid = ("name",) + OPTIMIZERS[doc["name"]][1]
    for key in doc:
        if key not in valid:
            raise ValueError(
                f"{where}: unknown key {key!r}{nearest(key, valid)}; valid: {', '.join(valid)}"
            )


def build_model_bundle(config, task: Task, out: Path) -> Bundle:
    """The bundle config.model names, for `task` (a directory given as the model is used
    as it is, after checking it fits the task)."""
    if is_bundle_dir(config.model):
        bundle = Bundle.load(config.model)
        check_fits(bundle, task, config.model)
        return bundle
    from model_zoo.zoo import ZOO

    if not is_factory(config.model) and config.model not in ZOO:
        raise ModelError(
            f"model {config.model!r} is not a zoo model"
            f"{nearest(config.model, ZOO)}, a 'package.module:factory' or a "
            f"bundle directory; zoo: {', '.join(ZOO)}"
        )
    entry = ZOO.get(config.model)
    if entry is not None and entry.task != task.kind:
        raise ModelError(
            f"{config.model} is a {entry.task} model and the data a {task.kind} "
            "task: name another model (edge-fl zoo list, or "
            "'package.module:factory')"
        )
    return Bundle.load(_compile(config, task, out))


def check_fits(bundle: Bundle, task: Task, where: str) -> None:
    """A bundle's inputs and classes against the data's."""
    if set(bundle.input_names) != set(task.inputs):
        raise ModelError(
            f"{where} takes inputs {list(bundle.input_names)}, the data gives {list(task.inputs)}"
        )
    for name, spec in task.inputs.items():
        dims = bundle.manifest["inputs"][name]["shape"][1:]
        if len(dims) != len(spec.shape) or any(
            isinstance(d, int) and d != n for d, n in zip(dims, spec.shape)
        ):
            raise ModelError(
                f"{where} takes {name} of shape {dims}, the data's is {list(spec.shape)}"
            )
    if bundle.num_classes < task.num_classes:
        raise ModelError(
            f"{where} has {bundle.num_classes} outputs, the data {task.num_classes} classes"
        )


def _compile(config, task: Task, out: Path) -> Path:
    if (task.kind == "regression") != (config.loss == "mse"):
        raise ModelError(
            f"a {task.kind} task trains with loss "
            f"{'mse' if task.kind == 'regression' else 'cross_entropy'}, "
            f"the config names {config.loss!r}"
        )
    import torch

    from model_zoo.compiler import compile_bundle
    from model_zoo.zoo import ZOO

    entry = ZOO.get(config.model) if not is_factory(config.model) else None
    factory = entry.build if entry else _import_factory(config.model)
    torch.manual_seed(config.seed)
    sample = sample_batch(task)
    if entry is not None and entry.tokens is not None and not config.model_options:
        # a zoo token model sizes itself and its sample (a positional one holds a table of
        # the examples' length: the config's, or the text's own)
        seq = config.sequence_length or (80 if task.kind == "next_char" else 20)
        module = entry.model(task.num_classes, seq)
        sample = entry.batch(SAMPLE_BATCH, torch.Generator().manual_seed(0), task.num_classes, seq)
    else:
        module = factory(**(sized_arguments(factory, task) | dict(config.model_options)))
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{config.model} returned {type(module).__name__}, not a torch.nn.Module")
    if getattr(config, "pretrain", None) is not None:  # the start: trained on public text
        from .pretrain import pretrain_module

        pretrain_module(config, task, module, out.parent)
    if config.optimizer is not None:
        optimizer = make_optimizer(config.optimizer, module)
    elif entry is not None:
        optimizer = entry.optimizer(module.parameters())
    else:
        optimizer = torch.optim.SGD(
            module.parameters(), lr=float(config.task.get("plan", {}).get("lr", 0.1))
        )
    loss = _loss(config.loss, task, entry)
    clip = (
        config.clip_grad_norm
        if config.clip_grad_norm is not None
        else (entry.clip_grad_norm if entry else None)
    )
    vocab = task.vocabulary.to_json() if task.vocabulary is not None else None
    try:
        return compile_bundle(
            module,
            sample,
            loss=loss,
            optimizer=optimizer,
            out=out,
            model_name=config.model.rpartition(":")[2],
            task=task.kind,
            clip_grad_norm=clip,
            vocabulary=vocab,
        )
    except NotImplementedError as e:  # the compiler's UnsupportedError names what and why
        raise ModelError(f"{config.model} cannot be compiled: {e}") from None


def sized_arguments(factory, task: Task) -> dict:
    """The data's sizes under the names the factory takes."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    spec = next(iter(task.inputs.values()))
    sizes = {
        "num_classes": task.num_classes,
        "vocab_size": task.num_classes,
        "vocabulary_size": task.num_classes,
        "input_shape": tuple(spec.shape),
    }
    if task.features is not None:
        sizes["features"] = task.features
    if task.is_text:
        sizes.pop("num_classes")
    return {k: v for k, v in sizes.items() if k in params}


def sample_batch(task: Task) -> dict:
    """A batch of the task's shapes and dtypes: its values only fix the graphs' static
    dimensions (token ids stay inside the vocabulary, labels inside the classes)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    batch = {}
    for name, spec in task.inputs.items():
        shape = (SAMPLE_BATCH,) + tuple(SAMPLE_SEQ if d == "seq" else d for d in spec.shape)
        batch[name] = (
            torch.randint(1, max(task.num_classes, 2), shape, generator=gen)
            if spec.dtype == "int64"
            else torch.rand(shape, generator=gen)
        )
    if task.is_text:
        batch["targets"] = torch.randint(
            1, task.num_classes, (SAMPLE_BATCH, SAMPLE_SEQ), generator=gen
        )
    elif task.kind == "classification":
        batch["targets"] = torch.randint(0, task.num_classes, (SAMPLE_BATCH,), generator=gen)
    else:
        batch["targets"] = torch.rand((SAMPLE_BATCH,), generator=gen)
    return batch


def make_optimizer(doc: dict, module):
    import torch

    check_optimizer(doc)
    cls = getattr(torch.optim, OPTIMIZERS[doc["name"]][0])
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items() if k != "name"}
    return cls(module.parameters(), **args)


def _loss(name: str, task: Task, entry):
    from torch import nn

    if name == "mse":
        return nn.MSELoss()
    if entry is not None:
        return entry.loss()
    return nn.CrossEntropyLoss(ignore_index=0 if task.is_text else -100)  # 0: text padding


def _import_factory(target: str):
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as e:
        raise ModelError(f"model {target!r}: cannot import {module_name!r} ({e})") from None
    except AttributeError:
        raise ModelError(f"model {target!r}: {module_name} has no {attr!r}") from None
    if not callable(factory):
        raise ModelError(f"model {target!r} is not callable")
    return factory


__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "ModelError",
    "build_model_bundle",
    "check_fits",
    "check_optimizer",
    "is_bundle_dir",
    "sample_batch",
    "sized_arguments",
]
