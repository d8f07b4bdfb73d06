"""Modules on tables of tensors (Python lists): adding, joining, selecting, splitting.

Torch7 adds and multiplies element by element in memory order, without broadcasting, so a
second operand of another shape but the same number of elements is taken in that order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from streamser import TorchObject

from ..errors import InputShapeError
from ..fields import flag, integer, optional_integer
from ..registry import BuildContext, builds


def _like(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    if tensor.shape == reference.shape:
        return tensor
    if tensor.numel() != reference.numel():
        raise InputShapeError(
            f"tensors of {tensor.numel()} and {reference.numel()} elements cannot be combined"
        )
    return tensor.reshape(reference.shape)


class CAddTable(nn.Module):
    """The sum of the input tensors; ``inplace`` accumulates into the first, as Torch7 does."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        first = x[0]
        total = first if self.inplace else first.clone()
        for other in x[1:]:
            total.add_(_like(other, first))
        return total


class CMulTable(nn.Module):
    """The element-wise product of the input tensors."""

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        product = x[0].clone()
        for other in x[1:]:
            product.mul_(_like(other, product))
        return product


class JoinTable(nn.Module):
    """The input tensors concatenated along ``dimension`` (1-based; negative counts from the
    end; one more when the inputs have ``nInputDims + 1`` dimensions, i.e. are a batch)."""

    def __init__(self, dimension: int, n_input_dims: int | None) -> None:
        super().__init__()
        self.dimension = dimension
        self.n_input_dims = n_input_dims

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, dim=table_dimension(self.dimension, self.n_input_dims, x[0]) - 1)

    def extra_repr(self) -> str:
        return f"dimension={self.dimension}, n_input_dims={self.n_input_dims}"


def table_dimension(dimension: int, n_input_dims: int | None, first: torch.Tensor) -> int:
    """``_getPositiveDimension`` of JoinTable and SplitTable, 1-based."""
    if dimension < 0:
        dimension = first.dim() + dimension + 1
    elif n_input_dims is not None and first.dim() == n_input_dims + 1:
        dimension += 1
    if not 1 <= dimension <= first.dim():
        raise InputShapeError(f"dimension {dimension} of a {first.dim()}-D tensor")
    return dimension


class SplitTable(JoinTable):
    """The input's slices along ``dimension``, as a list (the inverse of ``JoinTable``)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return list(x.unbind(table_dimension(self.dimension, self.n_input_dims, x) - 1))


class SelectTable(nn.Module):
    """Element ``index`` of the input list (1-based; negative counts from the end)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: list[Any]) -> Any:
        index = self.index + len(x) + 1 if self.index < 0 else self.index
        if not 1 <= index <= len(x):
            raise InputShapeError(f"element {self.index} of a table of {len(x)}")
        return x[index - 1]

    def extra_repr(self) -> str:
        return f"index={self.index}"


class NarrowTable(nn.Module):
    """``length`` elements of the input list from ``offset`` (1-based)."""

    def __init__(self, offset: int, length: int) -> None:
        super().__init__()
        self.offset = offset
        self.length = length

    def forward(self, x: list[Any]) -> list[Any]:
        if self.offset < 1 or self.offset + self.length - 1 > len(x):
            raise InputShapeError(
                f"elements {self.offset} to {self.offset + self.length - 1} of a table of {len(x)}"
            )
        return list(x[self.offset - 1 : self.offset - 1 + self.length])

    def extra_repr(self) -> str:
        return f"offset={self.offset}, length={self.length}"


class FlattenTable(nn.Module):
    """Nested lists flattened into one list of tensors, depth first."""

    def forward(self, x: list[Any]) -> list[torch.Tensor]:
        flat: list[torch.Tensor] = []
        stack: list[Any] = [x]
        while stack:
            item = stack.pop()
            if isinstance(item, (list, tuple)):
                stack.extend(reversed(item))
            else:
                flat.append(item)
        return flat


@builds("nn.Identity")
def identity(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return nn.Identity()


@builds("nn.CAddTable")
def c_add_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return CAddTable(flag(obj, "inplace"))


@builds("nn.CMulTable")
def c_mul_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return CMulTable()


@builds("nn.JoinTable")
def join_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return JoinTable(integer(obj, "dimension"), optional_integer(obj, "nInputDims"))


@builds("nn.SplitTable")
def split_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SplitTable(integer(obj, "dimension"), optional_integer(obj, "nInputDims"))


@builds("nn.SelectTable")
def select_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SelectTable(integer(obj, "index"))


@builds("nn.NarrowTable")
def narrow_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return NarrowTable(integer(obj, "offset"), integer(obj, "length", 1))


@builds("nn.FlattenTable")
def flatten_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return FlattenTable()
