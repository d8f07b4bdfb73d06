"""Layers with weights: convolutions, full (transposed) convolution, linear maps, lookup tables.

Torch7's convolutions are PyTorch's (cross-correlation, zero padding), so ``Conv2d`` and
``Linear`` are used as they are, created on the meta device and given the loaded tensors (no
weights are allocated, initialised and thrown away). ``SpatialConvolutionMM``'s 2-D weight is
viewed as 4-D by ``names.py``. Old files keep one ``padding`` instead of ``padW``/``padH``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from streamser import TorchObject

from ..errors import InputShapeError
from ..fields import field, integer, number
from ..registry import BuildContext, builds


def _padding(obj: TorchObject) -> tuple[int, int]:
    """(padH, padW): the old single ``padding`` field wins, as Torch7's backCompatibility."""
    if field(obj, "padding", None) is not None:
        pad = integer(obj, "padding")
        return pad, pad
    return integer(obj, "padH", 0), integer(obj, "padW", 0)


@builds("nn.SpatialConvolution", "nn.SpatialConvolutionMM")
def convolution(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    tensors = ctx.tensors(obj)
    weight = ctx.require(tensors, "weight", obj.typename, ndim=4)
    out_planes, in_planes, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_planes,
        out_planes,
        (kh, kw),
        stride=(integer(obj, "dH", 1), integer(obj, "dW", 1)),
        padding=_padding(obj),
        bias="bias" in tensors,
        device="meta",
        dtype=weight.dtype,
    )
    ctx.attach(conv, obj)
    return conv


class SpatialFullConvolution(nn.Module):
    """Transposed convolution with Torch7's ``adjW``/``adjH`` as output padding; a list input
    ``[x, target]`` chooses them so that the output has the target's spatial size."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, stride: tuple[int, int], pad: tuple[int, int], adj: tuple[int, int]) -> None:
        super().__init__()
        self.stride, self.pad, self.adj = stride, pad, adj

    def forward(self, x: Any) -> torch.Tensor:
        adj = self.adj
        if isinstance(x, (list, tuple)):
            x, target = x[0], x[1]
            adj = self._adjustment(target.shape[-2:])
        return F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.pad, output_padding=adj
        )

    def _adjustment(self, target: Sequence[int]) -> tuple[int, int]:
        """Torch7's ``calculateAdj``: the output padding that reaches the target size."""
        kh, kw = self.weight.shape[2:]
        (dh, dw), (ph, pw) = self.stride, self.pad
        return (target[0] + 2 * ph - kh) % dh, (target[1] + 2 * pw - kw) % dw

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad={self.pad}, adj={self.adj}"


@builds("nn.SpatialFullConvolution")
def full_convolution(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    module = SpatialFullConvolution(
        (integer(obj, "dH", 1), integer(obj, "dW", 1)),
        (integer(obj, "padH", 0), integer(obj, "padW", 0)),
        (integer(obj, "adjH", 0), integer(obj, "adjW", 0)),
    )
    tensors = ctx.attach(module, obj)
    ctx.require(tensors, "weight", obj.typename, ndim=4)
    if "bias" not in tensors:
        module.register_parameter("bias", None)
    return module


@builds("nn.Linear", "nn.LinearNoBias")
def linear(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    """rnn's ``LinearNoBias`` keeps a zero bias, and so does the built module."""
    tensors = ctx.tensors(obj)
    weight = ctx.require(tensors, "weight", obj.typename, ndim=2)
    out_features, in_features = weight.shape
    layer = nn.Linear(
        in_features, out_features, "bias" in tensors, device="meta", dtype=weight.dtype
    )
    ctx.attach(layer, obj)
    return layer


class LookupTable(nn.Module):
    """Rows of ``weight`` at 1-based indices (a vector or a batch matrix of them). With
    ``maxNorm``, the rows looked up are first renormalised in place, as Torch7 does."""

    weight: torch.Tensor

    def __init__(self, max_norm: float | None, norm_type: float) -> None:
        super().__init__()
        self.max_norm, self.norm_type = max_norm, norm_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (1, 2):
            raise InputShapeError(f"LookupTable takes a vector or a matrix, got {x.dim()}-D")
        index = x.long() - 1
        rows = self.weight.shape[0]
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= rows):
            raise InputShapeError(f"LookupTable of {rows} rows: an index is out of 1..{rows}")
        return F.embedding(index, self.weight, max_norm=self.max_norm, norm_type=self.norm_type)

    def extra_repr(self) -> str:
        return f"max_norm={self.max_norm}, norm_type={self.norm_type}"


@builds("nn.LookupTable")
def lookup_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    max_norm = field(obj, "maxNorm", None)
    module = LookupTable(
        None if max_norm is None else number(obj, "maxNorm"), number(obj, "normType", 2)
    )
    ctx.require(ctx.attach(module, obj), "weight", obj.typename, ndim=2)
    return module


class CMul(nn.Module):
    """Element-wise product with ``weight``: whole when the sizes match, else per batch row."""

    weight: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if x.numel() == weight.numel():
            return x * weight.reshape(x.shape)
        batch = x.shape[0]
        return (x.reshape(batch, -1) * weight.reshape(1, -1)).reshape(x.shape)


@builds("nn.CMul")
def c_mul(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    module = CMul()
    ctx.require(ctx.attach(module, obj), "weight", obj.typename)
    return module
