"""PyTorch layers the zoo needs that torch.nn does not ship. The compiler lowers them."""

from __future__ import annotations

import math

import torch
from torch import nn


class CIFGLSTM(nn.Module):
    """LSTM with coupled input and forget gates (i = 1 - f) and an optional projection.

    Greff et al. 2017 ("LSTM: A Search Space Odyssey") show CIFG matches the LSTM with a
    quarter fewer gate parameters; Hard et al. 2018 use it, projected, for next-word
    prediction on keyboards. Gate order in `weight_ih`/`weight_hh`/`bias` is (f, g, o).

    x [B, T, input_size] (batch_first) -> (y [B, T, P], (h_n [1, B, P], c_n [1, B, H]))
    with P = proj_size or hidden_size; the same convention as nn.LSTM.
    """

    def __init__(
        self, input_size: int, hidden_size: int, proj_size: int = 0, batch_first: bool = True
    ):
        super().__init__()
        if not batch_first:
            raise ValueError("CIFGLSTM supports batch_first=True only")
        self.input_size, self.hidden_size, self.proj_size = input_size, hidden_size, proj_size
        out = proj_size or hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, out))
        self.bias = nn.Parameter(torch.empty(3 * hidden_size))
        self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size)) if proj_size else None
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor):
        batch, steps, _ = x.shape
        out = self.proj_size or self.hidden_size
        h = x.new_zeros(batch, out)
        c = x.new_zeros(batch, self.hidden_size)
        xg = x @ self.weight_ih.T + self.bias
        ys = []
        for t in range(steps):
            f, g, o = (xg[:, t] + h @ self.weight_hh.T).chunk(3, dim=1)
            f, g, o = torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + (1 - f) * g
            h = o * torch.tanh(c)
            if self.weight_hr is not None:
                h = h @ self.weight_hr.T
            ys.append(h)
        return torch.stack(ys, dim=1), (h.unsqueeze(0), c.unsqueeze(0))
