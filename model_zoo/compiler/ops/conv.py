"""nn.Conv2d (groups=1, dilation=1) with its two gradients written as convolutions.

dx is the transposed convolution of dy with the same kernel. dW correlates the padded
input with dy, treating the batch as the channel axis: Conv(x^T, dy^T) with dilation equal
to the forward stride gives [C_in, C_out, k, k] (see Dumoulin & Visin 2016, "A guide to
convolution arithmetic for deep learning").
"""

from __future__ import annotations

from .base import Op, UnsupportedError


class Conv2d(Op):
    """x [N, C_in, H, W], W [C_out, C_in, kh, kw], b [C_out] -> y [N, C_out, H', W']."""

    def __init__(
        self,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        input_hw: tuple[int, int],
        has_bias: bool,
    ):
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.input_hw, self.has_bias = input_hw, has_bias
        self.output_hw = tuple(
            (n + 2 * p - k) // s + 1 for n, p, k, s in zip(input_hw, padding, kernel, stride)
        )
        if min(self.output_hw) < 1:
            raise UnsupportedError(f"Conv2d output would be empty for input {input_hw}")

    @property
    def _pads(self) -> list[int]:
        ph, pw = self.padding
        return [ph, pw, ph, pw]

    def forward(self, g, inputs, training):
        self.x, self.w = inputs[0], inputs[1]
        return g.op(
            "Conv",
            *inputs,
            kernel_shape=list(self.kernel),
            strides=list(self.stride),
            pads=self._pads,
        )

    def backward(self, g, grad_outputs, needs_grad):
        dy = grad_outputs[0]
        grads = [None] * (3 if self.has_bias else 2)
        if needs_grad[0]:
            output_padding = [
                n - ((o - 1) * s - 2 * p + k)
                for n, o, s, p, k in zip(
                    self.input_hw, self.output_hw, self.stride, self.padding, self.kernel
                )
            ]
            grads[0] = g.op(
                "ConvTranspose",
                dy,
                self.w,
                kernel_shape=list(self.kernel),
                strides=list(self.stride),
                pads=self._pads,
                output_padding=output_padding,
            )
        if needs_grad[1]:
            # the correlation pads x itself (a Pad node would copy x first)
            xt = g.op("Transpose", self.x, perm=[1, 0, 2, 3])
            dyt = g.op("Transpose", dy, perm=[1, 0, 2, 3])
            dw = g.op("Conv", xt, dyt, dilations=list(self.stride), pads=self._pads)
            kh, kw = self.kernel
            # with a stride that does not divide the padded input, the correlation is
            # larger than the kernel: the extra taps belong to no output
            dw = g.op("Slice", dw, g.ints(0, 0), g.ints(kh, kw), g.ints(2, 3))
            grads[1] = g.op("Transpose", dw, perm=[1, 0, 2, 3])
        if self.has_bias and needs_grad[2]:
            grads[2] = g.op("ReduceSum", dy, g.ints(0, 2, 3), keepdims=0)
        return grads
