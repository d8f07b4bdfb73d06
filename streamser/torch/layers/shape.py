"""Shape modules: views, reshapes, padding, narrowing and selecting, with Torch7's rules for
batches (``View``'s ``numInputDims``, ``Reshape``'s ``batchMode``, ``Padding``'s
``nInputDim``) and its 1-based, possibly negative, dimensions and indices.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from streamser import TorchObject

from ..errors import InputShapeError
from ..fields import field, integer, number, optional_integer, sizes
from ..registry import BuildContext, builds


class View(nn.Module):
    """``input:view(size)``, or ``view(batch, size)`` when the input holds several samples of
    the size: Torch7's ``batchsize`` rule, with ``numInputDims`` the sample's dimensions."""

    def __init__(self, size: list[int], num_input_dims: int | None) -> None:
        super().__init__()
        self.size, self.num_input_dims = size, num_input_dims
        self.num_elements = math.prod(s for s in size if s >= 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = self.batch_size(list(x.shape))
        shape = self.size if batch is None else [batch, *self.size]
        return x.reshape(shape)

    def batch_size(self, shape: list[int]) -> int | None:
        """View.lua's ``batchsize``: None when the input is a single sample."""
        ndim = len(shape)
        sample_dims = ndim if self.num_input_dims is None else self.num_input_dims
        if sample_dims > ndim:
            raise InputShapeError(f"a {ndim}-D input to a View of {sample_dims}-D samples")
        elements = math.prod(shape[ndim - sample_dims :])
        if self.num_elements == 0 or elements % self.num_elements:
            raise InputShapeError(f"input of size {tuple(shape)} cannot be viewed as {self.size}")
        batch = 1 if -1 in self.size else elements // self.num_elements
        batch *= math.prod(shape[: ndim - sample_dims])
        if batch == 1 and (self.num_input_dims is None or ndim <= self.num_input_dims):
            return None
        return batch

    def extra_repr(self) -> str:
        return f"size={self.size}, num_input_dims={self.num_input_dims}"


@builds("nn.View")
def view(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return View(sizes(obj, "size"), optional_integer(obj, "numInputDims"))


class Reshape(nn.Module):
    """``input:view(size)``, or with the first input dimension kept as a batch: always when
    ``batchMode`` is true, never when false, and when unset unless the input has exactly the
    size's elements and a first dimension other than 1."""

    def __init__(self, size: list[int], batch_mode: bool | None) -> None:
        super().__init__()
        self.size, self.batch_mode = size, batch_mode
        self.elements = math.prod(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        whole = self.batch_mode is False or (
            self.batch_mode is None and x.numel() == self.elements and x.shape[0] != 1
        )
        return x.reshape(self.size if whole else [x.shape[0], *self.size])

    def extra_repr(self) -> str:
        return f"size={self.size}, batch_mode={self.batch_mode}"


@builds("nn.Reshape")
def reshape(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    mode = field(obj, "batchMode", None)
    return Reshape(sizes(obj, "size"), None if mode is None else mode is not False)


class Padding(nn.Module):
    """``|pad|`` entries of ``value`` inserted along ``dim`` (1-based, one more when the input
    has other than ``nInputDim`` dimensions). A negative ``pad`` inserts before position
    ``index``; a positive one counts ``index`` from the end (1: after the last entry)."""

    def __init__(self, dim: int, pad: int, n_input_dim: int | None, value: float, index: int):
        super().__init__()
        self.dim, self.pad, self.n_input_dim = dim, pad, n_input_dim
        self.value, self.index = value, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.dim + (1 if self.n_input_dim is not None and x.dim() != self.n_input_dim else 0)
        if not 1 <= dim <= x.dim():
            raise InputShapeError(f"Padding along dimension {dim} of a {x.dim()}-D input")
        length = x.shape[dim - 1]
        index = length - self.index + 2 if self.pad > 0 else self.index
        if not 1 <= index <= length + 1:
            raise InputShapeError(f"Padding at index {self.index} of a dimension of {length}")
        filler_shape = list(x.shape)
        filler_shape[dim - 1] = abs(self.pad)
        filler = x.new_full(filler_shape, self.value)
        before = x.narrow(dim - 1, 0, index - 1)
        after = x.narrow(dim - 1, index - 1, length - index + 1)
        return torch.cat([before, filler, after], dim=dim - 1)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, pad={self.pad}, n_input_dim={self.n_input_dim}, "
            f"value={self.value}, index={self.index}"
        )


@builds("nn.Padding")
def padding(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Padding(
        integer(obj, "dim"),
        integer(obj, "pad"),
        optional_integer(obj, "nInputDim"),
        number(obj, "value", 0.0),
        integer(obj, "index", 1),
    )


class SpatialPadding(nn.Module):
    """Padding of the last two dimensions (left, right, top, bottom): zeros, where a negative
    amount crops, or a reflection of the border."""

    def __init__(self, pads: tuple[int, int, int, int], mode: str) -> None:
        super().__init__()
        self.pads, self.mode = pads, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4):
            raise InputShapeError(f"spatial padding takes 3-D or 4-D input, got {x.dim()}-D")
        left, right, top, bottom = self.pads
        if x.shape[-2] + top + bottom < 1 or x.shape[-1] + left + right < 1:
            raise InputShapeError(f"input of size {tuple(x.shape)} is too small to crop")
        return F.pad(x, self.pads, mode=self.mode)

    def extra_repr(self) -> str:
        return f"pads={self.pads}, mode={self.mode!r}"


def _pads(obj: TorchObject) -> tuple[int, int, int, int]:
    left = integer(obj, "pad_l")
    return (
        left,
        integer(obj, "pad_r", left),
        integer(obj, "pad_t", left),
        integer(obj, "pad_b", left),
    )


@builds("nn.SpatialZeroPadding")
def zero_padding(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SpatialPadding(_pads(obj), "constant")


@builds("nn.SpatialReflectionPadding")
def reflection_padding(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SpatialPadding(_pads(obj), "reflect")


def _dimension(dimension: int, x: torch.Tensor) -> int:
    """A 1-based dimension, negative counting from the end, as a 0-based one."""
    dim = x.dim() + dimension + 1 if dimension < 0 else dimension
    if not 1 <= dim <= x.dim():
        raise InputShapeError(f"dimension {dimension} of a {x.dim()}-D input")
    return dim - 1


class Narrow(nn.Module):
    """``length`` entries of ``dimension`` from ``index`` (1-based); a negative length counts
    from the end (-1: up to the last entry)."""

    def __init__(self, dimension: int, index: int, length: int) -> None:
        super().__init__()
        self.dimension, self.index, self.length = dimension, index, length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = _dimension(self.dimension, x)
        size = x.shape[dim]
        length = size - self.index + self.length + 2 if self.length < 0 else self.length
        if self.index < 1 or length < 0 or self.index - 1 + length > size:
            raise InputShapeError(f"Narrow({self.index}, {length}) of a dimension of {size}")
        return x.narrow(dim, self.index - 1, length)

    def extra_repr(self) -> str:
        return f"dimension={self.dimension}, index={self.index}, length={self.length}"


@builds("nn.Narrow")
def narrow(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Narrow(integer(obj, "dimension"), integer(obj, "index"), integer(obj, "length", 1))


class Select(nn.Module):
    """Entry ``index`` of ``dimension`` (1-based, negative counting from the end), which
    disappears from the output."""

    def __init__(self, dimension: int, index: int) -> None:
        super().__init__()
        self.dimension, self.index = dimension, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = _dimension(self.dimension, x)
        size = x.shape[dim]
        index = size + self.index + 1 if self.index < 0 else self.index
        if not 1 <= index <= size:
            raise InputShapeError(f"Select({self.index}) of a dimension of {size}")
        return x.select(dim, index - 1)

    def extra_repr(self) -> str:
        return f"dimension={self.dimension}, index={self.index}"


@builds("nn.Select")
def select(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Select(integer(obj, "dimension"), integer(obj, "index"))
