"""The general path beyond equality with PyTorch: dropout masks, buffers through the SDK,
regression and multi-label metrics, the choice between fast and general path, and the
refusal of what it cannot lower (naming the op, the module path and the source line)."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_sdk.bundle import Bundle
from edge_sdk.evaluator import Evaluator
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan
from model_zoo.compiler import (
    UnsupportedError,
    compile_bundle,
    dropout_keep_mask,
    normal_noise,
    uniform_noise,
)
from model_zoo.compiler.aten import supported_ops

from .bundle_runner import OrtTrainer, assert_steps_match, session, torch_step
from .coverage_models import Conv2dNet, Mlp


def _vectors(n, gen, classes=3):
    return {
        "x": torch.randn(n, 6, generator=gen),
        "targets": torch.randint(0, classes, (n,), generator=gen),
    }


def _compile(model, batch, out, loss=None, **kwargs):
    return compile_bundle(
        model,
        batch,
        loss=loss or nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        out=out,
        **kwargs,
    )


class TwoDropouts(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.p = p
        self.drop1, self.drop2 = nn.Dropout(p), nn.Dropout(p)

    def forward(self, x):
        h = self.drop1(torch.relu(self.a(x)))
        return self.head(self.drop2(torch.tanh(self.b(h))))


class MaskedTwin(TwoDropouts):
    """TwoDropouts with the bundle's masks for a given seed: dropout layer k (in graph
    order) takes dropout_keep_mask(seed, shape, p, salt=k)."""

    seed = 0

    def forward(self, x):
        def drop(h, salt):
            keep = torch.from_numpy(dropout_keep_mask(self.seed, tuple(h.shape), self.p, salt))
            return h * keep.to(h.dtype) / (1 - self.p)

        h = drop(torch.relu(self.a(x)), 0)
        return self.head(drop(torch.tanh(self.b(h)), 1))


class ChannelDropout(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.conv, self.drop, self.head = (
            nn.Conv2d(2, 4, 3, padding=1),
            nn.Dropout2d(p),
            nn.Linear(4, 3),
        )
        self.p = p

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.conv(x))).mean((2, 3)))


class ChannelMaskedTwin(ChannelDropout):
    """Dropout2d draws one Bernoulli(1 - p) per (example, channel): the bundle's draw is
    1 where the seeded uniform is below 1 - p, the complement of a keep mask at 1 - p."""

    seed = 0

    def forward(self, x):
        h = torch.relu(self.conv(x))
        shape = (h.shape[0], h.shape[1], 1, 1)
        drawn = 1 - torch.from_numpy(dropout_keep_mask(self.seed, shape, 1 - self.p, 0))
        return self.head((h * drawn / (1 - self.p)).mean((2, 3)))


def _train_beside_twin(bundle, model, twin, batch_of, steps, first_seed):
    """Train the bundle and `twin` (model's weights, the bundle's random draws for a seed)
    side by side on batches of 4, 1 and 3: equal losses at every step and equal
    parameters after. Returns the bundle's parameters."""
    twin.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    trainer = OrtTrainer(bundle)
    for step in range(steps):
        batch = batch_of([4, 1, 3][step % 3])
        twin.seed = first_seed + step
        ours = trainer.step({k: v.numpy() for k, v in batch.items()}, 0.1, seed=twin.seed)
        theirs = torch_step(twin, optimizer, nn.CrossEntropyLoss(), batch)
        assert np.isclose(float(ours["loss"]), theirs, rtol=1e-5, atol=1e-6), step
    for name, p in twin.named_parameters():
        np.testing.assert_allclose(trainer.params[name], p.detach().numpy(), rtol=1e-5, atol=1e-6)
    return trainer.params


def test_channel_dropout_trains_like_pytorch_with_the_same_draws(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)

    def images(n):
        return {
            "x": torch.randn(n, 2, 5, 5, generator=gen),
            "targets": torch.randint(0, 3, (n,), generator=gen),
        }

    model = ChannelDropout(0.4)
    bundle = _compile(copy.deepcopy(model), images(4), tmp_path / "b", path="general")
    _train_beside_twin(bundle, model, ChannelMaskedTwin(0.4), images, steps=6, first_seed=500)


class NoisyLatent(nn.Module):
    """A VAE-style sampled latent (randn_like) plus uniform jitter (torch.rand)."""

    def __init__(self):
        super().__init__()
        self.enc, self.head = nn.Linear(6, 8), nn.Linear(4, 3)

    def noise(self, mu):
        return torch.randn_like(mu), torch.rand(mu.shape[0], 4)

    def forward(self, x):
        mu, log_var = self.enc(x).chunk(2, dim=-1)
        eps, jitter = self.noise(mu)
        return self.head(mu + eps * torch.exp(0.5 * log_var) + 0.1 * (jitter - 0.5))


class NoisyLatentTwin(NoisyLatent):
    """The bundle's draws for a seed: random op k (in graph order) takes salt k, and a
    normal takes two (Box-Muller)."""

    seed = 0

    def noise(self, mu):
        shape = tuple(mu.shape)
        eps = torch.from_numpy(normal_noise(self.seed, shape, 0))
        return eps.to(mu.dtype), torch.from_numpy(uniform_noise(self.seed, shape, 2)).to(mu.dtype)


def test_sampled_noise_trains_like_pytorch_with_the_same_draws_and_eval_is_repeatable(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    model = NoisyLatent()
    bundle = _compile(copy.deepcopy(model), _vectors(4, gen), tmp_path / "b", path="general")
    params = _train_beside_twin(
        bundle, model, NoisyLatentTwin(), lambda n: _vectors(n, gen), steps=6, first_seed=70
    )
    # eval draws from seed 0 (it has no seed input): the same score every run
    batch = _vectors(5, gen)
    feeds = {k: v.numpy() for k, v in batch.items()} | params
    evaluate = session(bundle / "eval.onnx")
    names = {i.name for i in evaluate.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    first, count = evaluate.run(["loss_sum", "count"], feeds)
    again = evaluate.run(["loss_sum"], feeds)[0]
    twin = NoisyLatentTwin()
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    expected = nn.CrossEntropyLoss()(twin(batch["x"]), batch["targets"])
    assert float(first) == float(again)
    assert np.isclose(float(first) / float(count), float(expected), rtol=1e-5)


def test_dropout_trains_like_pytorch_with_the_same_masks(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = TwoDropouts(0.3)
    bundle = _compile(copy.deepcopy(model), _vectors(4, gen), tmp_path / "b", path="general")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["uses_seed"]
    twin = MaskedTwin(0.3)
    trainer_params = _train_beside_twin(
        bundle, model, twin, lambda n: _vectors(n, gen), steps=8, first_seed=1000
    )
    # eval and inference run without dropout (and without a seed)
    x = _vectors(5, gen)["x"]
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in trainer_params.items()})
    logits = session(bundle / "infer.onnx").run(["logits"], {"x": x.numpy()} | trainer_params)[0]
    np.testing.assert_allclose(
        logits, TwoDropouts.forward(twin.eval(), x).detach().numpy(), rtol=1e-5, atol=1e-6
    )


def test_batchnorm_statistics_are_bundle_state_carried_by_the_sdk(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    images = [
        {"x": torch.randn(3, 8, 8, generator=gen).numpy(), "targets": np.int64(i % 3)}
        for i in range(12)
    ]
    model = Conv2dNet()
    bundle_dir = _compile(
        copy.deepcopy(model),
        {"x": torch.randn(4, 3, 8, 8, generator=gen), "targets": torch.tensor([0, 1, 2, 0])},
        tmp_path / "b",
    )
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    buffers = [b["name"] for b in manifest["buffers"]]
    assert buffers == ["bn.running_mean", "bn.running_var"]  # num_batches_tracked dropped
    assert set(buffers) <= {p["name"] for p in manifest["parameters"]}  # carried alike
    assert not any(s["like"] in buffers for s in manifest["optimizer"]["state"])
    bundle = Bundle.load(bundle_dir)
    trainer = LocalTrainer(bundle)
    plan = TrainingPlan(epochs=1, batch_size=4, schedule=Constant(0.1))
    assert trainer.train(lambda epoch: iter(images), plan).status == "completed"
    trained = trainer.parameters()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for start in range(0, 12, 4):
        chunk = images[start : start + 4]
        torch_step(
            reference,
            optimizer,
            nn.CrossEntropyLoss(),
            {
                "x": torch.from_numpy(np.stack([e["x"] for e in chunk])),
                "targets": torch.tensor([int(e["targets"]) for e in chunk]),
            },
        )
    for name in buffers:
        np.testing.assert_allclose(
            trained[name], reference.get_buffer(name).numpy(), rtol=1e-5, atol=1e-6
        )
    # evaluation uses the running statistics, as PyTorch's eval mode does
    metrics = Evaluator(bundle).evaluate(trained, images, batch_size=5)
    reference.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.stack([e["x"] for e in images]))
        y = torch.tensor([int(e["targets"]) for e in images])
        loss = float(F.cross_entropy(reference(x), y))
    assert metrics["count"] == 12
    assert np.isclose(metrics["mean_loss"], loss, rtol=1e-4)


def test_regression_and_multilabel_metrics(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(7, 6, generator=gen), torch.randn(7, 3, generator=gen)
    model = Mlp()
    bundle = _compile(
        copy.deepcopy(model), {"x": x, "targets": y}, tmp_path / "r", loss=nn.MSELoss()
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "regression"
    assert manifest["metrics"]["eval"] == ["loss_sum", "count", "squared_error", "absolute_error"]
    params = {k: v.detach().numpy() for k, v in model.named_parameters()}
    examples = [{"x": x[i].numpy(), "targets": y[i].numpy()} for i in range(7)]
    metrics = Evaluator(Bundle.load(bundle)).evaluate(params, examples, batch_size=3)
    with torch.no_grad():
        err = (model(x) - y).numpy()
    assert np.isclose(metrics["mse"], np.mean(err**2), rtol=1e-5)
    assert np.isclose(metrics["mae"], np.mean(np.abs(err)), rtol=1e-5)
    assert np.isclose(metrics["mean_loss"], np.mean(err**2), rtol=1e-5)

    labels = (torch.rand(7, 3, generator=gen) > 0.5).float()
    bundle = _compile(
        copy.deepcopy(model),
        {"x": x, "targets": labels},
        tmp_path / "m",
        loss=nn.BCEWithLogitsLoss(),
    )
    assert json.loads((bundle / "manifest.json").read_text())["task"] == "multilabel"
    examples = [{"x": x[i].numpy(), "targets": labels[i].numpy()} for i in range(7)]
    metrics = Evaluator(Bundle.load(bundle)).evaluate(params, examples, batch_size=4)
    with torch.no_grad():
        hits = ((model(x) > 0).float() == labels).float().mean()
    assert np.isclose(metrics["accuracy"], float(hits))
    out = session(bundle / "infer.onnx").run(None, {"x": x.numpy()} | params)
    assert len(out) == 2  # logits and probabilities


class SigmoidMlp(Mlp):
    def forward(self, x):
        return torch.sigmoid(super().forward(x))


@pytest.mark.parametrize(
    "loss, signed", [(nn.BCELoss(), False), (nn.SoftMarginLoss(), True)], ids=["bce", "soft_margin"]
)
def test_multilabel_metrics_read_outputs_and_labels_as_the_loss_does(loss, signed, tmp_path):
    """BCELoss reads probabilities (a label is predicted above 0.5, and infer's
    probabilities are the outputs themselves); SoftMarginLoss reads logits and -1/1 labels."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(9, 6, generator=gen)
    labels = (torch.rand(9, 3, generator=gen) > 0.5).float()
    labels = labels * 2 - 1 if signed else labels
    model = Mlp() if signed else SigmoidMlp()
    bundle = _compile(copy.deepcopy(model), {"x": x, "targets": labels}, tmp_path / "b", loss=loss)
    params = {k: v.detach().numpy() for k, v in model.named_parameters()}
    examples = [{"x": x[i].numpy(), "targets": labels[i].numpy()} for i in range(9)]
    metrics = Evaluator(Bundle.load(bundle)).evaluate(params, examples, batch_size=4)
    with torch.no_grad():
        outputs = model(x)
    predicted = outputs > (0.0 if signed else 0.5)
    assert np.isclose(metrics["accuracy"], float((predicted == (labels > 0)).float().mean()))
    assert 0.2 < metrics["accuracy"] < 0.9  # neither all-positive nor all-negative
    _, probabilities = session(bundle / "infer.onnx").run(None, {"x": x.numpy()} | params)
    expected = outputs if not signed else torch.sigmoid(outputs)
    np.testing.assert_allclose(probabilities, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_auto_path_keeps_the_fast_path_for_models_it_covers(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(4)
    batch = _vectors(4, gen)
    model = Mlp()
    auto = _compile(copy.deepcopy(model), batch, tmp_path / "auto")
    fast = _compile(copy.deepcopy(model), batch, tmp_path / "fast", path="fast")
    for name in ("train_step.onnx", "eval.onnx", "infer.onnx", "manifest.json"):
        assert (auto / name).read_bytes() == (fast / name).read_bytes(), name
    general = _compile(copy.deepcopy(model), batch, tmp_path / "general", path="general")
    assert (general / "train_step.onnx").read_bytes() != (fast / "train_step.onnx").read_bytes()
    assert "buffers" in json.loads((general / "manifest.json").read_text())


def _domains(graph: onnx.GraphProto) -> set[str]:
    found = {node.domain for node in graph.node}
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found |= _domains(attr.g)
    return found


def test_general_bundles_use_only_the_standard_domain(tmp_path):
    gen = torch.Generator().manual_seed(5)
    model = Conv2dNet()
    bundle = _compile(
        model,
        {"x": torch.randn(2, 3, 8, 8, generator=gen), "targets": torch.tensor([0, 2])},
        tmp_path / "b",
    )
    for filename in ("train_step.onnx", "eval.onnx", "infer.onnx"):
        proto = onnx.load(bundle / filename)
        assert _domains(proto.graph) <= {""}
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", 18)]


class LogGamma(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x):
        return self.lin(torch.lgamma(x.abs() + 1))


class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(6, 6))
        self.lin = nn.Linear(6, 3)

    def forward(self, x):
        h = self.inner(x)
        return self.lin(h + h[h > 0].sum())


class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.lin = nn.GRU(6, 5, batch_first=True), nn.Linear(5, 3)

    def forward(self, x):
        lengths = torch.ones(x.shape[0], dtype=torch.int64)
        packed = nn.utils.rnn.pack_padded_sequence(x.unsqueeze(1), lengths, batch_first=True)
        _, h = self.rnn(packed)
        return self.lin(h[-1])


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x):
        return self.lin(x) * 2 if x.sum() > 0 else self.lin(x)


@pytest.mark.parametrize(
    "model, op, module, line",
    [
        (LogGamma, "aten.lgamma", "module <root> (", "torch.lgamma(x.abs() + 1)"),
        (Masked, "boolean mask", "module <root> (", "h[h > 0].sum()"),
        (Packed, "packed sequence", "", "self.rnn(packed)"),
        (Branching, "could not capture", "", "if x.sum() > 0"),
    ],
)
def test_refusal_names_the_op_the_module_and_the_source_line(model, op, module, line, tmp_path):
    gen = torch.Generator().manual_seed(6)
    with pytest.raises(UnsupportedError) as info:  # path="auto": the fast path refuses first
        _compile(model(), _vectors(3, gen), tmp_path / "b")
    message = str(info.value)
    assert op in message and module in message and line in message, message
    assert "test_general_path.py:" in message


def test_batch_norm_with_a_cumulative_average_is_refused_by_name(tmp_path):
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4, momentum=None), nn.Linear(4, 3))
    gen = torch.Generator().manual_seed(6)
    batch = _vectors(4, gen)
    batch["input"] = batch.pop("x")  # nn.Sequential's forward takes `input`
    with pytest.raises(UnsupportedError, match="BatchNorm1d with momentum=None .* at 1"):
        _compile(model, batch, tmp_path / "b")


class CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell, self.lin = nn.GRUCell(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = x.new_zeros(x.shape[0], 5)
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.lin(h)


def test_a_loop_over_a_dynamic_dimension_is_refused_naming_the_input_and_dimension(tmp_path):
    gen = torch.Generator().manual_seed(6)
    batch = {"x": torch.randn(3, 5, 4, generator=gen), "targets": torch.tensor([0, 1, 2])}
    with pytest.raises(UnsupportedError, match="fixes dimension 1 of input 'x'"):
        _compile(CellLoop(), batch, tmp_path / "b", dynamic_dims={"x": {0: "batch", 1: "seq"}})
    # the same model with a static length compiles, and trains as PyTorch does
    torch.manual_seed(0)
    batches = [
        {
            "x": torch.randn(b, 5, 4, generator=gen),
            "targets": torch.randint(0, 3, (b,), generator=gen),
        }
        for b in (3, 1, 4)
    ]
    assert_steps_match(
        CellLoop(),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        nn.CrossEntropyLoss(),
        batches,
        tmp_path / "static",
        dynamic_dims={"x": {0: "batch"}},
    )


class StackedLstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True, dropout=0.4)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        out, (h_n, _) = self.rnn(x)
        return self.head(out[:, -1] + h_n[-1].repeat(1, 2))


def test_recurrent_inter_layer_dropout_is_seeded_and_eval_equals_pytorch(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)
    model = StackedLstm()
    batch = {"x": torch.randn(3, 6, 4, generator=gen), "targets": torch.tensor([0, 1, 2])}
    bundle = _compile(
        copy.deepcopy(model), batch, tmp_path / "b", dynamic_dims={"x": {0: "batch", 1: "seq"}}
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["uses_seed"] and manifest["inputs"]["x"]["shape"] == ["batch", "seq", 4]
    trainer = OrtTrainer(bundle)
    losses = [
        float(trainer.step({k: v.numpy() for k, v in batch.items()}, 0.1, seed=s)["loss"])
        for s in (1, 1)
    ]
    assert np.isfinite(losses).all()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in trainer.params.items()})
    x = torch.randn(2, 9, 4, generator=gen)  # another batch size and sequence length
    logits = session(bundle / "infer.onnx").run(["logits"], {"x": x.numpy()} | trainer.params)[0]
    with torch.no_grad():
        np.testing.assert_allclose(logits, model.eval()(x).numpy(), rtol=1e-5, atol=1e-6)


def test_docs_list_every_supported_op():
    import pathlib

    docs = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "compiler.md").read_text()
    ops = supported_ops()
    assert "aten.convolution_backward.default" in ops and "aten.addmm.default" in ops
    missing = [op for op in ops if f"`{op.removeprefix('aten.')}`" not in docs]
    assert not missing, f"docs/compiler.md lacks {missing}"


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_gradient_clipping_on_the_general_path(optimizer, tmp_path):
    from .bundle_runner import assert_steps_match

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(8)
    batches = [_vectors(n, gen) for n in (4, 1, 3)]
    make = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.5),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01),
    }[optimizer]
    assert_steps_match(
        Mlp(),
        make,
        nn.CrossEntropyLoss(),
        batches,
        tmp_path / "b",
        clip_grad_norm=0.05,
        path="general",
    )


def test_cross_entropy_backward_is_kept_whole_and_equals_pytorch(tmp_path):
    """The gradient of cross-entropy (log-softmax + NLL, ignore_index and class weights)
    is exp(log-probabilities) times one coefficient per row, the target column scattered
    in: one Exp over the [N, C] logits, no zero tensor or row sum over them."""
    torch.manual_seed(0)
    model = Mlp()
    loss = nn.CrossEntropyLoss(ignore_index=1, weight=torch.tensor([0.5, 2.0, 1.0]))
    gen = torch.Generator().manual_seed(3)
    batch = _vectors(5, gen)
    batch["targets"][:2] = torch.tensor([1, 2])
    bundle = _compile(copy.deepcopy(model), batch, tmp_path / "b", loss=loss, path="general")
    graph = onnx.load(str(bundle / "train_step.onnx")).graph
    (log_softmax,) = [n for n in graph.node if n.op_type == "LogSoftmax"]
    readers = [n for n in graph.node if log_softmax.output[0] in n.input]
    (exp,) = [n for n in readers if n.op_type == "Exp"]  # the [N, C] probabilities
    (scale,) = [n for n in graph.node if exp.output[0] in n.input]
    # the decomposition scatters into zeros and multiplies exp by a row sum instead
    (scatter,) = [n for n in graph.node if n.op_type == "ScatterElements"]
    assert scale.op_type == "Mul" and scatter.input[0] == scale.output[0]
    trainer = OrtTrainer(bundle)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        trainer.step({k: v.numpy() for k, v in batch.items()}, 0.1)
        torch_step(model, optimizer, loss, batch, None)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(trainer.params[name], p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_batch_of_ignored_targets_leaves_the_parameters_as_they_were(tmp_path):
    """Every target ignored: PyTorch's loss is 0/0 but its gradient is 0, so plain SGD
    changes nothing; the bundle's gradient must not turn that inf coefficient into NaN."""
    torch.manual_seed(0)
    model = Mlp()
    batch = _vectors(4, torch.Generator().manual_seed(1))
    loss = nn.CrossEntropyLoss(ignore_index=0)
    bundle = compile_bundle(
        model,
        batch,
        loss=loss,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        out=tmp_path / "b",
        path="general",
    )
    trainer = OrtTrainer(bundle)
    before = dict(trainer.params)
    ignored = {"x": batch["x"].numpy(), "targets": np.zeros(4, np.int64)}
    trainer.step(ignored, 0.1)
    for name, p in before.items():
        np.testing.assert_array_equal(trainer.params[name], p)
