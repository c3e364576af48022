"""The bundle's eval and inference graphs, dynamic shapes, dropout, and its manifest."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from model_zoo.compiler import UnsupportedError, compile_bundle, dropout_keep_mask
from model_zoo.zoo import ZOO, build_bundle

from .bundle_runner import OrtTrainer, session, torch_step

ALL_GRAPHS = ("train_step.onnx", "eval.onnx", "infer.onnx")


def _domains(graph: onnx.GraphProto) -> set[str]:
    found = set()
    for node in graph.node:
        found.add(node.domain)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found |= _domains(attr.g)
    return found


@pytest.fixture(scope="module")
def zoo_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {name: build_bundle(name, root / name) for name in ZOO}


def test_every_graph_uses_only_the_standard_onnx_domain(zoo_bundles):
    for name, bundle in zoo_bundles.items():
        for filename in ALL_GRAPHS:
            model = onnx.load(bundle / filename)
            assert _domains(model.graph) <= {""}, f"{name}/{filename}"
            assert [o.domain for o in model.opset_import] == [""]


def test_no_code_path_imports_onnxruntime_training():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    for path in root.glob("*/**/*.py"):
        if ".venv" in path.parts:
            continue
        # split so this file does not match itself
        assert "onnxruntime" + ".training" not in path.read_text(), path


def test_manifest_describes_parameters_inputs_and_optimizer(zoo_bundles):
    bundle = zoo_bundles["keyboard_cifg"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    params = np.load(bundle / "parameters.npz", allow_pickle=False)
    assert [p["name"] for p in manifest["parameters"]] == list(params.files)
    total = sum(int(np.prod(p["shape"])) for p in manifest["parameters"])
    assert 1_300_000 < total < 1_500_000  # Hard et al. 2018: ~1.4M
    assert manifest["inputs"]["tokens"]["shape"] == ["batch", "seq"]
    assert manifest["targets"]["targets"]["shape"] == ["batch", "seq"]
    assert manifest["optimizer"]["name"] == "sgd"
    assert len(manifest["model_id"]) == 64


def test_model_id_is_a_content_hash(tmp_path):
    a = build_bundle("mlp", tmp_path / "a", seed=1)
    b = build_bundle("mlp", tmp_path / "b", seed=1)
    c = build_bundle("mlp", tmp_path / "c", seed=2)
    ids = [json.loads((d / "manifest.json").read_text())["model_id"] for d in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize(
    "name", ["keyboard_cifg_tiny", "shakespeare_char_tiny", "femnist_cnn_tiny", "mlp"]
)
def test_other_batch_sizes_and_lengths_run_and_match_pytorch(name, tmp_path):
    entry = ZOO[name]
    torch.manual_seed(0)
    model = entry.build()
    bundle = build_bundle(name, tmp_path / "b", model=model, batch_size=8)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    sequence = entry.task != "classification"
    shapes = [(1, 5), (3, 17), (1, 1)] if sequence else [(1, None), (13, None)]
    evaluator = session(bundle / "eval.onnx")
    inferer = session(bundle / "infer.onnx")
    params = dict(np.load(bundle / "parameters.npz"))
    for size, length in shapes:
        batch = entry.batch(size, gen)
        if length is not None:
            batch = {k: v[:, :length] for k, v in batch.items()}
        inputs = {k: v for k, v in batch.items() if k != "targets"}
        with torch.no_grad():
            logits = model(**inputs)
        flat = logits.reshape(-1, logits.shape[-1])
        targets = batch["targets"].reshape(-1)
        feeds = {k: v.numpy() for k, v in batch.items()} | params
        out = dict(zip([o.name for o in evaluator.get_outputs()], evaluator.run(None, feeds)))
        keep = targets != entry.ignore_index
        expected_sum = float(
            nn.functional.cross_entropy(flat[keep], targets[keep], reduction="sum")
        )
        np.testing.assert_allclose(out["loss_sum"], expected_sum, rtol=1e-5, atol=1e-5)
        assert out["count"] == keep.sum()
        assert out["correct"] == (flat.argmax(1) == targets)[keep].sum()
        if sequence:
            top3 = flat.topk(3, dim=1).indices
            assert out["correct_top3"] == (top3 == targets[:, None]).any(1)[keep].sum()
        infer_feeds = {k: v.numpy() for k, v in inputs.items()} | params
        got = dict(zip([o.name for o in inferer.get_outputs()], inferer.run(None, infer_feeds)))
        np.testing.assert_allclose(got["logits"], logits.numpy(), rtol=1e-4, atol=1e-5)
        assert got["top_ids"].shape[-1] == min(3, logits.shape[-1])
        np.testing.assert_array_equal(got["top_ids"][..., 0], logits.argmax(-1).numpy())


def test_train_step_accepts_a_last_partial_batch_of_one(tmp_path):
    bundle = build_bundle("keyboard_cifg_tiny", tmp_path / "b", batch_size=8)
    trainer = OrtTrainer(bundle)
    gen = torch.Generator().manual_seed(2)
    for size, length in [(8, 12), (1, 12), (1, 3), (5, 30)]:
        batch = {k: v[:, :length] for k, v in ZOO["keyboard_cifg_tiny"].batch(size, gen).items()}
        out = trainer.step({k: v.numpy() for k, v in batch.items()}, lr=0.5)
        assert np.isfinite(out["loss"]) and out["count"] == size * min(length, 12)


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.drop1 = nn.Linear(6, 16), nn.Dropout(0.3)
        self.b, self.drop2 = nn.Linear(16, 3), nn.Dropout(0.5)

    def forward(self, x):
        return self.b(self.drop2(torch.relu(self.drop1(self.a(x)))))


def test_dropout_with_a_seed_input_equals_pytorch_with_the_same_masks(tmp_path):
    torch.manual_seed(0)
    model = DropoutNet()
    gen = torch.Generator().manual_seed(3)
    batches = [
        {"x": torch.randn(5, 6, generator=gen), "targets": torch.randint(0, 3, (5,), generator=gen)}
        for _ in range(3)
    ]
    import copy

    bundle = compile_bundle(
        copy.deepcopy(model),
        batches[0],
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        out=tmp_path / "b",
    )
    trainer = OrtTrainer(bundle)
    seed = {"value": 0}
    for salt, layer in enumerate([model.drop1, model.drop2]):

        def hook(module, args, output, salt=salt):
            mask = dropout_keep_mask(seed["value"], tuple(args[0].shape), module.p, salt)
            return args[0] * torch.from_numpy(mask) / (1 - module.p)

        layer.register_forward_hook(hook)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(10):
        seed["value"] = 1000 + step
        batch = batches[step % 3]
        trainer.step({k: v.numpy() for k, v in batch.items()}, 0.1, seed=seed["value"])
        torch_step(model, optimizer, nn.CrossEntropyLoss(), batch)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(trainer.params[name], p.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_dropout_keep_mask_keeps_the_right_fraction_and_varies_with_seed():
    a = dropout_keep_mask(1, (200, 500), 0.3)
    b = dropout_keep_mask(2, (200, 500), 0.3)
    assert abs(a.mean() - 0.7) < 0.01
    assert abs((a == b).mean() - (0.7**2 + 0.3**2)) < 0.01  # independent masks agree this often
    row_means = a.mean(axis=1)
    assert row_means.std() < 0.05  # no striping along the fast axis


def test_unsupported_layers_are_named_in_the_error(tmp_path):
    # the fast path's refusal (path="auto" compiles this model on the general path)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    batch = {"input": torch.randn(3, 4), "targets": torch.tensor([0, 1, 0])}
    with pytest.raises(UnsupportedError, match="BatchNorm1d"):
        compile_bundle(
            model,
            batch,
            loss=nn.CrossEntropyLoss(),
            path="fast",
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            out=tmp_path / "b",
        )
