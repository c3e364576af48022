"""The general path against PyTorch: small models written the usual way (one per case in
coverage_models.py), each compiled with path="general" and trained 20 steps with
SGD-momentum and Adam on batches of mixed sizes, including 1 (and mixed sequence lengths
for sequence models), equal to PyTorch within the tolerances of test_compiler_equivalence.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model_zoo.compiler import bundle as bundle_module

from .bundle_runner import assert_steps_match
from .coverage_models import CASES

OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
}
# (batch, sequence length); BatchNorm cases skip the single example PyTorch refuses
SIZES = [(4, 6), (1, 3), (3, 8), (2, 5)]
BATCH_NORM_SIZES = [(4, 6), (2, 3), (3, 8), (5, 5)]


def _batches(name: str):
    case = CASES[name]
    gen = torch.Generator().manual_seed(1)
    sizes = BATCH_NORM_SIZES if case.batch_norm else SIZES
    return [case.batch(b, t if case.sequence else 6, gen) for b, t in sizes]


_CAPTURES: dict = {}
_CAPTURE = bundle_module.capture


def _shared_capture(name: str):
    """compile_bundle's capture, run once per case: the captured graphs do not depend on
    the optimizer (the slow part of compiling is PyTorch's export, ~1-3 s per case)."""

    def capture(module, *args, **kwargs):
        if name not in _CAPTURES:
            _CAPTURES[name] = _CAPTURE(module, *args, **kwargs)
        cap = _CAPTURES[name]
        return dataclasses.replace(
            cap,
            parameters=dict(module.named_parameters()),
            buffers={n: b for n, b in module.named_buffers() if n in cap.buffers},
        )

    return capture


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_general_path_equals_pytorch(name, optimizer, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_module, "capture", _shared_capture(name))
    case = CASES[name]
    torch.manual_seed(0)
    batches = _batches(name)
    dynamic = None
    if case.sequence:
        dynamic = {k: {0: "batch", 1: "seq"} for k in batches[0] if k != "targets"}
    assert_steps_match(
        case.build(),
        OPTIMIZERS[optimizer],
        case.loss(),
        batches,
        tmp_path / "bundle",
        flatten=case.flatten,
        path="general",
        task=case.task,
        dynamic_dims=dynamic,
    )
