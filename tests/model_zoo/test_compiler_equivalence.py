"""Equivalence with PyTorch is the oracle: 20 steps of train_step.onnx on onnxruntime must
equal 20 PyTorch steps on the same batches, for every zoo model and every optimizer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model_zoo.layers import CIFGLSTM
from model_zoo.zoo import ZOO

from .bundle_runner import assert_steps_match

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4
    ),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
}

# full-size zoo models with small batches keep the suite fast; the shapes of the weights
# are the real ones
ZOO_MODELS = ["keyboard_cifg", "shakespeare_char", "femnist_cnn", "logreg", "mlp"]


def _batches(name: str, n: int = 3, size: int = 4, seq: int | None = None):
    gen = torch.Generator().manual_seed(7)
    batches = [ZOO[name].batch(size, gen) for _ in range(n)]
    if seq is not None:
        batches = [{k: v[:, :seq] for k, v in b.items()} for b in batches]
    if batches[0]["targets"].dim() == 2:  # right-pad one row to exercise ignore_index
        for b in batches:
            b["targets"][0, -3:] = ZOO[name].ignore_index
            first = next(k for k in b if k != "targets")
            b[first][0, -3:] = 0
    return batches


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_model_train_steps_equal_pytorch(name, optimizer, tmp_path):
    torch.manual_seed(3)
    model = ZOO[name].build()
    seq = 10 if ZOO[name].task != "classification" else None
    assert_steps_match(
        model, OPTIMIZERS[optimizer], ZOO[name].loss(), _batches(name, seq=seq), tmp_path / "bundle"
    )


class ImageNet(nn.Module):
    """Outside the zoo: strided conv, pooling, LayerNorm, GELU/Tanh/Sigmoid, a residual."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.norm = nn.LayerNorm(12)
        self.mid = nn.Linear(12, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        h = self.pool(torch.relu(self.conv(x))).flatten(1)  # [B, 3 * 2 * 2]
        h = F.gelu(self.norm(h))
        h = h + 0.5 * torch.tanh(self.mid(h))
        return self.head(torch.sigmoid(h) - h)


class SequenceNet(nn.Module):
    """Outside the zoo: embedding -> GRU -> 2-layer LSTM -> projected CIFG -> linear."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 6, padding_idx=0)
        self.gru = nn.GRU(6, 10, batch_first=True)
        self.lstm = nn.LSTM(10, 8, num_layers=2, batch_first=True)
        self.proj_lstm = nn.LSTM(8, 7, proj_size=5, batch_first=True)
        self.cifg = CIFGLSTM(5, 6, proj_size=4)
        self.head = nn.Linear(4, 11)

    def forward(self, ids):
        h, _ = self.gru(self.embed(ids))
        h, _ = self.lstm(h)
        h, _ = self.proj_lstm(h)
        h = h.transpose(1, 2).transpose(1, 2).contiguous()
        h, _ = self.cifg(h)
        return self.head(h)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_image_model_outside_zoo_equals_pytorch(optimizer, tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    batches = [
        {
            "x": torch.randn(5, 1, 8, 8, generator=gen),
            "targets": torch.randint(0, 4, (5,), generator=gen),
        }
        for _ in range(3)
    ]
    assert_steps_match(
        ImageNet(), OPTIMIZERS[optimizer], nn.CrossEntropyLoss(), batches, tmp_path / "b"
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_sequence_model_outside_zoo_equals_pytorch(optimizer, tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        ids = torch.randint(1, 11, (4, 9), generator=gen)
        targets = torch.randint(1, 11, (4, 9), generator=gen)
        ids[1, 6:] = 0
        targets[1, 6:] = 0
        batches.append({"ids": ids, "targets": targets})
    assert_steps_match(
        SequenceNet(),
        OPTIMIZERS[optimizer],
        nn.CrossEntropyLoss(ignore_index=0),
        batches,
        tmp_path / "b",
    )


@pytest.mark.parametrize("optimizer", ["sgd", "sgd_momentum", "adam"])
def test_gradient_clipping_equals_clip_grad_norm(optimizer, tmp_path):
    torch.manual_seed(0)
    model = ZOO["keyboard_cifg_tiny"].build()
    batches = _batches("keyboard_cifg_tiny", seq=8)
    # a max norm below the gradients' norm, so clipping acts
    probe = copy.deepcopy(model)
    logits = probe(batches[0]["tokens"])
    ZOO["keyboard_cifg_tiny"].loss()(
        logits.reshape(-1, logits.shape[-1]), batches[0]["targets"].reshape(-1)
    ).backward()
    assert torch.nn.utils.clip_grad_norm_(probe.parameters(), 1e9) > 0.1
    assert_steps_match(
        model,
        OPTIMIZERS[optimizer],
        ZOO["keyboard_cifg_tiny"].loss(),
        batches,
        tmp_path / "b",
        clip_grad_norm=0.05,
    )
