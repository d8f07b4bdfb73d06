"""Normalization: batch normalization, cross-channel LRN, and p-norm normalization.

Batch normalization is PyTorch's own arithmetic (``F.batch_norm``: biased variance to
normalise, unbiased to update the running variance, momentum weighting the new batch), which
is THNN's. Its ``train`` field reaches C as a ``bool``, so a ``0`` means evaluation there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from streamser import TorchObject

from ..errors import InputShapeError
from ..fields import ffi_bool, integer, number
from ..registry import BuildContext, builds

_BATCH_DIMS = {
    "nn.BatchNormalization": 2,
    "nn.SpatialBatchNormalization": 4,
    "nn.VolumetricBatchNormalization": 5,
}


class BatchNormalization(nn.Module):
    """Batch normalization over dimension 1 of ``n_dim``-D batches. In evaluation, a single
    sample (``n_dim - 1`` dimensions) is accepted and, as in Torch7, comes out as a batch of
    one."""

    weight: torch.Tensor | None
    bias: torch.Tensor | None
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, n_dim: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.n_dim, self.eps, self.momentum = n_dim, eps, momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.n_dim - 1 and not self.training:
            x = x.unsqueeze(0)
        if x.dim() != self.n_dim or x.shape[1] != self.running_mean.numel():
            raise InputShapeError(
                f"batch normalization of {self.running_mean.numel()} features over "
                f"{self.n_dim}-D batches got a tensor of size {tuple(x.shape)}"
            )
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.running_mean.numel()}, eps={self.eps}, momentum={self.momentum}"


@builds(*_BATCH_DIMS, train=ffi_bool)
def batch_normalization(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    module = BatchNormalization(
        _BATCH_DIMS[obj.typename], number(obj, "eps", 1e-5), number(obj, "momentum", 0.1)
    )
    module.register_parameter("weight", None)
    module.register_parameter("bias", None)
    ctx.attach(module, obj)
    return module


class SpatialCrossMapLRN(nn.Module):
    """``x / (k + alpha/size * sum of x^2 over neighbouring channels) ** beta``.

    The window of channel ``c`` spans ``c - (size-1)//2`` to ``c + size-1 - (size-1)//2``:
    centred for odd sizes as Torch7's CPU code; for even sizes (where that code fails) the
    convention of its CUDA code.
    """

    def __init__(self, size: int, alpha: float, beta: float, k: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4):
            raise InputShapeError(f"SpatialCrossMapLRN takes 3-D or 4-D input, got {x.dim()}-D")
        batch = x if x.dim() == 4 else x.unsqueeze(0)
        before = (self.size - 1) // 2
        squares = F.pad(batch * batch, (0, 0, 0, 0, before, self.size - 1 - before))
        window = (self.size, 1, 1)
        sums = F.avg_pool3d(squares.unsqueeze(1), window, stride=1, divisor_override=1)
        scale = sums.squeeze(1) * (self.alpha / self.size) + self.k
        output = batch * scale.pow(-self.beta)
        return output if x.dim() == 4 else output.squeeze(0)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


@builds("nn.SpatialCrossMapLRN")
def cross_map_lrn(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SpatialCrossMapLRN(
        integer(obj, "size"),
        number(obj, "alpha", 1e-4),
        number(obj, "beta", 0.75),
        number(obj, "k", 1.0),
    )


class Normalize(nn.Module):
    """Each row (of a 1-D or 2-D input) divided by its p-norm: ``(sum |x|^p + eps)^(1/p)``,
    or ``max |x| + eps`` for ``p = inf``."""

    def __init__(self, p: float, eps: float) -> None:
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (1, 2):
            raise InputShapeError(f"Normalize takes 1-D or 2-D input, got {x.dim()}-D")
        rows = x.reshape(1, -1) if x.dim() == 1 else x
        return (rows / self._norms(rows)).reshape(x.shape)

    def _norms(self, rows: torch.Tensor) -> torch.Tensor:
        if self.p == math.inf:
            return rows.abs().amax(dim=1, keepdim=True) + self.eps
        powers = rows.abs().pow(self.p) if self.p % 2 != 0 else rows.pow(self.p)
        return (powers.sum(dim=1, keepdim=True) + self.eps).pow(1 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}"


@builds("nn.Normalize")
def normalize(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Normalize(number(obj, "p"), number(obj, "eps", 1e-10))
