"""Element-wise modules: thresholds, PReLU, tanh, sigmoid, (log-)softmax, arithmetic, dropout.

``inplace`` flags are honoured as in Torch7 (the input tensor is overwritten), since a
container that feeds the same input to several branches sees the difference. THNN's softmax
runs over dimension 1 of a 1-D or 3-D input and dimension 2 of a 2-D or 4-D one (1-based).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from streamser import TorchObject

from ..errors import InputShapeError
from ..fields import flag, integer, lua_truthy, number
from ..registry import BuildContext, builds


class Threshold(nn.Module):
    """THNN's Threshold (``nn.ReLU`` is ``Threshold(0, 0)``): ``x > threshold ? x : val``,
    so a NaN becomes ``val``; in place, entries ``<= threshold`` are overwritten, so a NaN
    stays. Both differ from ``torch.relu`` and ``nn.Threshold`` on NaN."""

    def __init__(self, threshold: float, value: float, inplace: bool) -> None:
        super().__init__()
        self.threshold, self.value, self.inplace = threshold, value, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return x.masked_fill_(x <= self.threshold, self.value)
        return torch.where(x > self.threshold, x, torch.full_like(x, self.value))

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, value={self.value}, inplace={self.inplace}"


@builds("nn.Threshold", "nn.ReLU")
def threshold(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Threshold(number(obj, "threshold", 1e-6), number(obj, "val", 0.0), flag(obj, "inplace"))


@builds("nn.Tanh")
def tanh(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return nn.Tanh()


@builds("nn.Sigmoid")
def sigmoid(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return nn.Sigmoid()


class PReLU(nn.Module):
    """``x > 0 ? x : w*x`` with one ``w`` per channel (dimension 1 of a 1-D input, 2 of more),
    or one shared ``w`` when ``nOutputPlane`` is 0."""

    weight: torch.Tensor

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.planes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.reshape(()) if self.planes == 0 else self._per_channel(x)
        return torch.where(x > 0, x, weight * x)

    def _per_channel(self, x: torch.Tensor) -> torch.Tensor:
        channel = 1 if x.dim() > 1 else 0
        if x.shape[channel] != self.planes:
            raise InputShapeError(f"PReLU of {self.planes} planes got {x.shape[channel]}")
        shape = [1] * x.dim()
        shape[channel] = self.planes
        return self.weight.reshape(shape)

    def extra_repr(self) -> str:
        return f"planes={self.planes}"


@builds("nn.PReLU")
def prelu(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    module = PReLU(integer(obj, "nOutputPlane", 0))
    ctx.require(ctx.attach(module, obj), "weight", obj.typename)
    return module


class SoftMax(nn.Module):
    """THNN's (log-)softmax over the feature dimension of a 1-D to 4-D input."""

    def __init__(self, log: bool) -> None:
        super().__init__()
        self.log = log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (1, 2, 3, 4):
            raise InputShapeError(f"softmax takes 1-D to 4-D input, got {x.dim()}-D")
        dim = 1 if x.dim() in (2, 4) else 0
        return F.log_softmax(x, dim) if self.log else F.softmax(x, dim)

    def extra_repr(self) -> str:
        return f"log={self.log}"


@builds("nn.SoftMax")
def softmax(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SoftMax(log=False)


@builds("nn.LogSoftMax")
def log_softmax(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SoftMax(log=True)


class MulConstant(nn.Module):
    """``x * constant``, overwriting ``x`` when ``inplace``."""

    def __init__(self, constant: float, inplace: bool) -> None:
        super().__init__()
        self.constant, self.inplace = constant, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(self.constant) if self.inplace else x * self.constant

    def extra_repr(self) -> str:
        return f"constant={self.constant}, inplace={self.inplace}"


@builds("nn.MulConstant")
def mul_constant(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return MulConstant(number(obj, "constant_scalar"), flag(obj, "inplace"))


class Power(nn.Module):
    """``x ** power`` (``nn.Power``)."""

    def __init__(self, power: float) -> None:
        super().__init__()
        self.power = power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.pow(self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}"


class Square(nn.Module):
    """``x * x`` (``nn.Square``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class Sqrt(nn.Module):
    """``sqrt(x)`` (``nn.Sqrt``: its ``eps`` only matters to Torch7's CUDA code; the CPU
    forward ignores it, and so does this one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)


@builds("nn.Power")
def power(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Power(number(obj, "pow"))


@builds("nn.Square")
def square(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Square()


@builds("nn.Sqrt")
def sqrt(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Sqrt()


class SAdd(nn.Module):
    """rnn's ``SAdd``: ``x + addend``, negated when ``negate``."""

    def __init__(self, addend: float, negate: bool) -> None:
        super().__init__()
        self.addend, self.negate = addend, negate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x + self.addend
        return -total if self.negate else total

    def extra_repr(self) -> str:
        return f"addend={self.addend}, negate={self.negate}"


@builds("nn.SAdd")
def s_add(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SAdd(number(obj, "addend"), flag(obj, "negate"))


class Dropout(nn.Module):
    """Torch7's Dropout. Version 2 (the default since 2015) scales kept values by
    ``1/(1-p)`` while training and passes values through in evaluation; version 1 (``v2``
    unset) keeps values while training and scales by ``1-p`` in evaluation."""

    def __init__(self, p: float, v2: bool, inplace: bool) -> None:
        super().__init__()
        self.p, self.v2, self.inplace = p, v2, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0:
            return x
        if self.training:
            noise = torch.empty_like(x).bernoulli_(1 - self.p)
            if self.v2:
                noise.div_(1 - self.p)
            return x.mul_(noise) if self.inplace else x * noise
        if self.v2:
            return x
        return x.mul_(1 - self.p) if self.inplace else x * (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, v2={self.v2}, inplace={self.inplace}"


@builds("nn.Dropout", train=lua_truthy)
def dropout(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    """rnn's ``lazy`` and ``mono`` options change only which random mask training draws."""
    return Dropout(number(obj, "p", 0.5), flag(obj, "v2"), flag(obj, "inplace"))
