"""Small models written the usual way, one per case of the compiler's coverage suite.

Each case: a model factory, a batch factory (batch size, seq length, generator) -> dict of
inputs plus "targets", a loss, and the task. Kept tiny so 20 steps take milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    batch: Callable[[int, int, torch.Generator], dict]
    loss: Callable[[], object] = nn.CrossEntropyLoss
    task: str = "classification"
    sequence: bool = False  # vary the sequence length too
    flatten: bool = True  # the loss takes [N, C] logits and [N] targets
    batch_norm: bool = False  # PyTorch refuses to train BatchNorm on one example


def _vectors(features: int, classes: int = 3):
    def make(b, t, gen):
        return {
            "x": torch.randn(b, features, generator=gen),
            "targets": torch.randint(0, classes, (b,), generator=gen),
        }

    return make


def _images(channels: int, size: int, classes: int = 3, dims: int = 2):
    def make(b, t, gen):
        shape = (b, channels) + (size,) * dims
        return {
            "x": torch.randn(*shape, generator=gen),
            "targets": torch.randint(0, classes, (b,), generator=gen),
        }

    return make


def _sequences(features: int, classes: int = 3):
    def make(b, t, gen):
        return {
            "x": torch.randn(b, t, features, generator=gen),
            "targets": torch.randint(0, classes, (b,), generator=gen),
        }

    return make


def _tokens(vocab: int, classes: int = 3):
    def make(b, t, gen):
        return {
            "ids": torch.randint(1, vocab, (b, t), generator=gen),
            "targets": torch.randint(0, classes, (b,), generator=gen),
        }

    return make


def _lm(vocab: int):
    def make(b, t, gen):
        ids = torch.randint(1, vocab, (b, t), generator=gen)
        return {"ids": ids, "targets": torch.randint(1, vocab, (b, t), generator=gen)}

    return make


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Activations(nn.Module):
    """Every listed activation, in one chain."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.acts = nn.ModuleList(
            [
                nn.ReLU(),
                nn.ReLU6(),
                nn.LeakyReLU(0.1),
                nn.ELU(),
                nn.GELU(),
                nn.GELU(approximate="tanh"),
                nn.SiLU(),
                nn.Hardswish(),
                nn.Sigmoid(),
                nn.Tanh(),
            ]
        )
        self.mid = nn.ModuleList([nn.Linear(8, 8) for _ in self.acts])
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x)
        for act, lin in zip(self.acts, self.mid):
            h = lin(act(h)) * 2.0
        return self.out(h + F.silu(h) + F.leaky_relu(h, 0.2))


class SoftmaxHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.softmax(self.a(x), dim=-1) + F.log_softmax(self.a(x) * 0.5, dim=1)
        return self.b(h)


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, stride=2, padding=1, bias=False)  # BatchNorm follows
        self.c2 = nn.Conv1d(6, 6, 3, padding=2, dilation=2, groups=3)
        self.c3 = nn.Conv1d(6, 6, 3, padding=1, groups=6)  # depthwise
        self.bn = nn.BatchNorm1d(6)
        self.pool = nn.MaxPool1d(2)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.c1(x)))
        h = self.c3(self.c2(h)) + h
        return self.head(self.pool(h).mean(dim=-1))


class Conv2dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.dil = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        # depthwise, strided, dilated, not square: the one-hot form of its weight gradient
        self.dws = nn.Conv2d(8, 8, (3, 2), (2, 1), (1, 0), (1, 2), groups=8, bias=False)
        self.pool = nn.AvgPool2d(2)
        self.mpool = nn.MaxPool2d(3, stride=1, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu6(self.bn(self.c1(x)))
        h = h + self.pw(F.hardswish(self.dw(h)))
        h = self.dws(self.mpool(self.dil(h)))
        h = self.pool(h)
        return self.head(torch.flatten(self.gap(h), 1))


class Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8, bias=False)  # BatchNorm follows
        self.ln = nn.LayerNorm(8)
        self.rms = nn.RMSNorm(8)
        self.gn = nn.GroupNorm(2, 8)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.ln(self.bn(self.a(x)))
        return self.head(self.rms(h) + self.gn(h))


class MoreOps(nn.Module):
    """Adaptive pooling to 2 x 2, InstanceNorm, F.normalize, topk, sort and roll."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)  # InstanceNorm follows
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(16 + 4 + 8, 3)

    def forward(self, x):
        h = self.pool(F.silu(self.inorm(self.conv(x)))).flatten(1)  # [B, 16]
        h = F.normalize(h, dim=1) * 4.0
        top = torch.topk(h, 4, dim=1).values
        ordered = torch.sort(torch.roll(h[:, :8], 1, dims=1), dim=1, descending=True).values
        return self.head(torch.cat([h, top, ordered], dim=1))


class ConvTransposeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
        self.gap = nn.AdaptiveAvgPool2d((1, 1))
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        return self.head(self.gap(torch.tanh(self.up(torch.relu(self.down(x))))).flatten(1))


class TensorOps(nn.Module):
    """Indexing, slicing, boolean masks, cat/stack/split/chunk, reductions, matmuls,
    reshapes, where, clamp, cumsum and residuals."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.w = nn.Parameter(torch.randn(4, 4) * 0.3)
        self.head = nn.Linear(13, 3)

    def forward(self, x):  # x [B, T, 4]
        h = self.a(x)  # [B, T, 8]
        last = h[:, -1]  # [B, 8]
        first, second = h.split(4, dim=-1)
        c1, c2 = torch.chunk(h, 2, dim=2)
        st = torch.stack([first, c2], dim=1).sum(dim=1)  # [B, T, 4]
        mm = torch.matmul(st, self.w) + torch.bmm(c1, c2.transpose(1, 2)).mean(-1, keepdim=True)
        e = torch.einsum("btd,de->bte", second, self.w)
        mask = x[..., :1] > 0  # boolean mask [B, T, 1]
        z = torch.where(mask, mm, e).clamp(-2.0, 2.0)
        z = z.masked_fill(~mask, 0.0).cumsum(dim=1)
        z = z.clone()
        z[z > 1.5] = 1.5  # assignment through a boolean mask
        z = z.view(z.shape[0], -1, 2, 2).permute(0, 1, 3, 2).reshape(z.shape[0], z.shape[1], 4)
        pooled = z.max(dim=1).values + z.amax(dim=1) + z[:, 1:].mean(1)
        rep = pooled.unsqueeze(1).expand(-1, 2, -1).repeat(1, 1, 2).flatten(1)[:, :8]
        return self.head(torch.cat([last + rep, pooled, z.sum(dim=(1, 2)).unsqueeze(1)], dim=1))


class EmbeddingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 6, padding_idx=0)
        self.bag = nn.EmbeddingBag(12, 6, mode="mean")
        self.head = nn.Linear(12, 3)

    def forward(self, ids):
        return self.head(torch.cat([self.emb(ids).mean(1), self.bag(ids)], dim=1))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        # no biases: a key bias gets no gradient (softmax ignores a constant shift), and
        # Adam turns that gradient's float rounding into steps of size lr
        self.qkv = nn.Linear(8, 24, bias=False)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True, bias=False)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        h = self.emb(ids)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        b, t = ids.shape
        q, k, v = (z.view(b, t, 2, 4).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + a.transpose(1, 2).reshape(b, t, 8)
        h = h + self.mha(h, h, h, need_weights=False)[0]
        return self.head(h[:, -1])


class TinyTransformerLM(nn.Module):
    def __init__(self, vocab=13, d=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(16, d) * 0.1)
        self.layer = nn.TransformerEncoderLayer(
            d, 2, dim_feedforward=16, dropout=0.0, batch_first=True, bias=False
        )
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        t = ids.shape[1]
        h = self.emb(ids) + self.pos[:t]
        mask = nn.Transformer.generate_square_subsequent_mask(t)
        return self.head(self.layer(h, src_mask=mask, is_causal=True))


class Recurrent(nn.Module):
    def __init__(self, kind):
        super().__init__()
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = cls(4, 5, num_layers=2, bidirectional=True, batch_first=True, dropout=0.0)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.head(h[:, -1])


class DropoutNet(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(6, 8), nn.Dropout(p), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.a(x))))


def _regression(features: int, outputs: int):
    def make(b, t, gen):
        return {
            "x": torch.randn(b, features, generator=gen),
            "targets": torch.randn(b, outputs, generator=gen),
        }

    return make


def _multilabel(features: int, labels: int):
    def make(b, t, gen):
        return {
            "x": torch.randn(b, features, generator=gen),
            "targets": (torch.rand(b, labels, generator=gen) > 0.6).float(),
        }

    return make


def _distributions(features: int, classes: int):
    def make(b, t, gen):
        return {
            "x": torch.randn(b, features, generator=gen),
            "targets": torch.softmax(torch.randn(b, classes, generator=gen), dim=1),
        }

    return make


def _padded_lm(vocab: int):
    def make(b, t, gen):
        ids = torch.randint(1, vocab, (b, t), generator=gen)
        targets = torch.randint(1, vocab, (b, t), generator=gen)
        ids[0, t // 2 :] = 0
        targets[0, t // 2 :] = 0
        return {"ids": ids, "targets": targets}

    return make


class FrozenAndUnused(Mlp):
    """A frozen layer and a layer forward never calls: neither changes, as in PyTorch."""

    def __init__(self):
        super().__init__()
        self.a.requires_grad_(False)
        self.spare = nn.Linear(3, 3)


class LogSoftmaxMlp(Mlp):
    def forward(self, x):
        return F.log_softmax(super().forward(x), dim=1)


def user_loss(outputs, targets):
    """A loss written by hand: squared error plus an L1 penalty on the outputs."""
    return ((outputs - targets) ** 2).mean() + 0.1 * outputs.abs().mean()


CLASS_WEIGHTS = torch.tensor([0.5, 2.0, 1.0])


class EncoderDecoder(nn.Module):
    """A small U-Net: a strided convolution down, ConvTranspose2d and nearest
    interpolation up, a skip connection by concatenation."""

    def __init__(self):
        super().__init__()
        self.down1 = nn.Conv2d(1, 4, 3, padding=1)
        self.down2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.mix = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        a = torch.relu(self.down1(x))
        b = torch.relu(self.down2(a))
        up = self.up(b) + F.interpolate(b, scale_factor=2.0, mode="nearest")[:, :4]
        return self.mix(torch.cat([a, up], 1)).mean((2, 3))


class Resampling(nn.Module):
    """Bilinear upsampling (both corner rules), InstanceNorm2d, padding modes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect", bias=False)
        self.norm = nn.InstanceNorm2d(4, affine=True)
        self.edge = nn.Conv2d(4, 4, 2, padding=1, padding_mode="replicate")
        self.wrap = nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular")
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.norm(self.conv(x)))
        h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
        h = self.edge(h) + F.interpolate(h, size=(13, 13), mode="bilinear", align_corners=True)
        return self.head(self.wrap(h).mean((2, 3)))


class AveragePools(nn.Module):
    """Average pools whose windows differ: ceil_mode, padding not counted."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.a = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.b = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.b(self.a(torch.tanh(self.conv(x))))
        return self.head(h.mean((2, 3)))


class TimeIndexing(nn.Module):
    """Max pooling over a dynamic length, and index tensors after a slice: h[:, idx]
    read and h[:, idx] written."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.pool(torch.relu(self.conv(x.transpose(1, 2))))  # [N, 6, T // 2]
        picked = h[:, torch.tensor([0, 2, 5])]  # channels 0, 2, 5: [N, 3, T // 2]
        h = h.clone()
        h[:, torch.tensor([1, 3])] = picked[:, :2] * 0.5
        return self.head(h.amax(-1)) + picked.mean(-1)


class EncoderDecoderLstm(nn.Module):
    """An encoder's final (h, c) as a decoder's initial state; the decoder's c_n used."""

    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.dec = nn.LSTM(4, 6, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        _, (h, c) = self.enc(x)
        y, (_, c_n) = self.dec(x.flip(1), (h, c))
        return self.head(torch.cat([y[:, -1], c_n[-2], c_n[-1]], 1))


class GruFromState(nn.Module):
    """A GRU started from a state the model computes (time-major input)."""

    def __init__(self):
        super().__init__()
        self.init = nn.Linear(4, 8)
        self.rnn = nn.GRU(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h0 = torch.tanh(self.init(x.mean(1))).unsqueeze(0)
        y, h_n = self.rnn(x.transpose(0, 1), h0)
        return self.head(y[-1] + h_n[0])


class RecurrentVariants(nn.Module):
    """A projected bidirectional LSTM handing its state to another, nn.RNN (relu, two
    bidirectional layers; tanh from a computed h0), and LSTM/GRU without biases."""

    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(4, 6, proj_size=3, batch_first=True, bidirectional=True)
        self.dec = nn.LSTM(4, 6, proj_size=3, batch_first=True, bidirectional=True)
        self.relu_rnn = nn.RNN(4, 5, 2, nonlinearity="relu", batch_first=True, bidirectional=True)
        self.init = nn.Linear(4, 5)
        self.tanh_rnn = nn.RNN(4, 5)
        self.plain_lstm = nn.LSTM(4, 5, bias=False, batch_first=True)
        self.plain_gru = nn.GRU(5, 5, bias=False, batch_first=True)
        self.head = nn.Linear(6 + 10 + 5 + 5, 3)

    def forward(self, x):
        _, state = self.enc(x)
        projected, _ = self.dec(x.flip(1), state)
        relu, _ = self.relu_rnn(x)
        h0 = torch.tanh(self.init(x.mean(1))).unsqueeze(0)
        _, tanh_h = self.tanh_rnn(x.transpose(0, 1), h0)
        plain, _ = self.plain_gru(self.plain_lstm(x)[0])
        features = [projected[:, -1], relu.mean(1), tanh_h[0], plain[:, -1]]
        return self.head(torch.cat(features, 1))


class Functions(nn.Module):
    """cumprod, nn.Bilinear, a weight-normed layer, torch.eye and logsumexp."""

    def __init__(self):
        super().__init__()
        self.normed = nn.utils.parametrizations.weight_norm(nn.Linear(6, 5))
        self.bilinear = nn.Bilinear(5, 5, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.normed(x))
        running = torch.cumprod(h + 1.0, dim=1)  # [N, 5]
        mixed = h @ torch.eye(5, dtype=h.dtype) + torch.logsumexp(h, 1, keepdim=True)
        return self.head(self.bilinear(running * 0.2, mixed))


class CausalConv(nn.Module):
    """A temporal convolution block as TCNs write it: padding then chomping the
    future off, left padding with F.pad, a constant-valued pad, and in-place ops."""

    def __init__(self):
        super().__init__()
        self.dilated = nn.Conv1d(4, 6, 3, dilation=2, padding=4)
        self.causal = nn.Conv1d(6, 6, 3)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.dilated(x.transpose(1, 2))[:, :, :-4])  # chomp
        g = self.causal(F.pad(h, (2, 0)))
        g += h
        g[:, 0] = 0.0
        g.relu_()
        return self.head(F.pad(g, (1, 1), value=0.5).mean(-1))


class Prototypes(nn.Module):
    """Distances to learned prototypes (torch.cdist, as prototypical networks score),
    std_mean, a float remainder, nan_to_num and a product of two masks."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 4)
        self.prototypes = nn.Parameter(torch.randn(3, 4))

    def forward(self, x):
        h = self.embed(x)
        std, mean = torch.std_mean(h, dim=1, keepdim=True)
        h = (h - mean) / (std + 1.0) + 0.1 * torch.remainder(h, 0.7)
        kept = (h == h) * (h.abs() < 1e6)  # not NaN and finite: booleans multiplied
        h = torch.nan_to_num(h) * kept
        return -torch.cdist(h.unsqueeze(0), self.prototypes.unsqueeze(0)).squeeze(0)


class RunningAverage(nn.Module):
    """A buffer the model itself updates in train mode, under no_grad (an exponential
    average of its features, as normalizers and EMA heads keep), and a step counter."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)
        self.register_buffer("average", torch.zeros(8))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        h = self.embed(x)
        if self.training:
            with torch.no_grad():
                self.average.mul_(0.9).add_(0.1 * h.mean(0))
                self.updates += 1
        return self.head(h - self.average)


class AdaptivePools(nn.Module):
    """Adaptive pools as torchvision-style heads write them: average to sizes that do
    not divide the input (windows of two sizes), max to ones that do, and 1-d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Linear(4 * 9 + 4 * 4 + 4 * 3, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))  # [N, 4, 6, 6]
        average = F.adaptive_avg_pool2d(h, (4, 3)).flatten(1)[:, : 4 * 9]
        largest = F.adaptive_max_pool2d(h, (2, 2)).flatten(1)
        rows = F.adaptive_avg_pool1d(h.mean(2), 4).flatten(1)[:, : 4 * 3]
        return self.head(torch.cat([average, largest, rows], 1))


class AnglesAndRunningSums(nn.Module):
    """atan2 (angles of feature pairs, every quadrant) and logcumsumexp (a running
    soft maximum over features)."""

    def __init__(self):
        super().__init__()
        self.pairs = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y, x_ = self.pairs(x).chunk(2, dim=1)  # [N, 4] each, both signs
        angles = torch.atan2(y, x_)
        running = torch.logcumsumexp(torch.cat([y, x_], 1), dim=1)
        return self.head(torch.cat([angles, running[:, ::2]], 1))


CASES = {
    "linear": Case(lambda: Mlp(), _vectors(6)),
    "activations": Case(Activations, _vectors(6)),
    "softmax": Case(SoftmaxHead, _vectors(6)),
    "conv1d": Case(Conv1dNet, _images(4, 8, dims=1), batch_norm=True),
    "conv2d": Case(Conv2dNet, _images(3, 8), batch_norm=True),
    "norms": Case(Norms, _vectors(8), batch_norm=True),
    "conv_transpose": Case(ConvTransposeNet, _images(2, 6)),
    "more_ops": Case(MoreOps, _images(2, 6)),
    "tensor_ops": Case(TensorOps, _sequences(4), sequence=True),
    "embedding": Case(EmbeddingNet, _tokens(12), sequence=True),
    "attention": Case(Attention, _tokens(12), sequence=True),
    "transformer_lm": Case(TinyTransformerLM, _lm(13), task="next_word", sequence=True),
    "lstm": Case(lambda: Recurrent("lstm"), _sequences(4), sequence=True),
    "gru": Case(lambda: Recurrent("gru"), _sequences(4), sequence=True),
    "dropout0": Case(lambda: DropoutNet(0.0), _vectors(6)),
    "frozen_and_unused": Case(FrozenAndUnused, _vectors(6)),
    # losses and tasks
    "cross_entropy_options": Case(
        Mlp,
        _vectors(6),
        lambda: nn.CrossEntropyLoss(weight=CLASS_WEIGHTS, label_smoothing=0.1, ignore_index=1),
    ),
    "nll": Case(LogSoftmaxMlp, _vectors(6), lambda: nn.NLLLoss(weight=CLASS_WEIGHTS)),
    "bce_with_logits": Case(
        Mlp,
        _multilabel(6, 3),
        lambda: nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 3.0, 0.5])),
        task="multilabel",
        flatten=False,
    ),
    "mse": Case(Mlp, _regression(6, 3), nn.MSELoss, task="regression", flatten=False),
    "l1": Case(Mlp, _regression(6, 3), nn.L1Loss, task="regression", flatten=False),
    "smooth_l1": Case(
        Mlp, _regression(6, 3), lambda: nn.SmoothL1Loss(beta=0.5), task="regression", flatten=False
    ),
    "huber": Case(
        Mlp, _regression(6, 3), lambda: nn.HuberLoss(delta=0.7), task="regression", flatten=False
    ),
    "kl_div": Case(
        LogSoftmaxMlp,
        _distributions(6, 3),
        lambda: nn.KLDivLoss(reduction="batchmean"),
        flatten=False,
    ),
    "user_loss": Case(Mlp, _regression(6, 3), lambda: user_loss, task="regression", flatten=False),
    "padded_lm": Case(
        TinyTransformerLM,
        _padded_lm(13),
        lambda: nn.CrossEntropyLoss(ignore_index=0),
        task="next_word",
        sequence=True,
    ),
    "encoder_decoder": Case(EncoderDecoder, _images(1, 8)),
    "resampling": Case(Resampling, _images(2, 6)),
    "average_pools": Case(AveragePools, _images(3, 9)),
    "time_indexing": Case(TimeIndexing, _sequences(4), sequence=True),
    "lstm_state_handoff": Case(EncoderDecoderLstm, _sequences(4), sequence=True),
    "gru_initial_state": Case(GruFromState, _sequences(4), sequence=True),
    "recurrent_variants": Case(RecurrentVariants, _sequences(4), sequence=True),
    "functions": Case(Functions, _vectors(6)),
    "causal_conv": Case(CausalConv, _sequences(4), sequence=True),
    "prototypes": Case(Prototypes, _vectors(6)),
    "running_average": Case(RunningAverage, _vectors(6)),
    "adaptive_pools": Case(AdaptivePools, _images(2, 6)),
    "angles_and_running_sums": Case(AnglesAndRunningSums, _vectors(6)),
}
