"""Containers: modules made of other modules (``nn.Sequential``, ``nn.Concat``, ...).

Dimensions are Torch7's, counted from 1: ``Concat(2)`` joins along PyTorch's dimension 1.
``Concat``, ``DepthConcat`` and ``Parallel`` take their dimensions as absolute (no batch
offset, unlike ``JoinTable``), as their Lua code does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from streamser import TorchObject

from ..errors import InputShapeError
from ..fields import integer
from ..registry import BuildContext, builds, children_in_order, register_children


@builds("nn.Sequential", "nn.SpatialLPPooling")
def sequential(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    """``nn.SpatialLPPooling`` is a Sequential (power, average pooling, root) in Torch7 too."""
    return nn.Sequential(*ctx.children(obj))


class Concat(nn.Module):
    """Every child on the same input; outputs joined along ``dimension`` (1-based)."""

    def __init__(self, dimension: int, kids: list[nn.Module]) -> None:
        super().__init__()
        self.dimension = dimension
        register_children(self, kids)

    def forward(self, x: Any) -> torch.Tensor:
        outputs = [kid(x) for kid in children_in_order(self)]
        return torch.cat(outputs, dim=_dim(self.dimension, outputs[0]))

    def extra_repr(self) -> str:
        return f"dimension={self.dimension}"


class DepthConcat(Concat):
    """``Concat`` of outputs whose other sizes differ: each is centred in a zero-filled
    output of the largest sizes, starting at ``floor((largest - size) / 2)`` as in Torch7."""

    def forward(self, x: Any) -> torch.Tensor:
        outputs = [kid(x) for kid in children_in_order(self)]
        dim = _dim(self.dimension, outputs[0])
        largest = [max(out.shape[d] for out in outputs) for d in range(outputs[0].dim())]
        return torch.cat([_centre(out, largest, dim) for out in outputs], dim=dim)


def _centre(output: torch.Tensor, largest: list[int], skip: int) -> torch.Tensor:
    pads: list[int] = []
    for d in reversed(range(output.dim())):
        gap = 0 if d == skip else largest[d] - output.shape[d]
        pads += [gap // 2, gap - gap // 2]
    return F.pad(output, pads) if any(pads) else output


class ConcatTable(nn.Module):
    """Every child on the same input; the outputs as a list (a Lua table)."""

    def __init__(self, kids: list[nn.Module]) -> None:
        super().__init__()
        register_children(self, kids)

    def forward(self, x: Any) -> list[Any]:
        return [kid(x) for kid in children_in_order(self)]


class ParallelTable(ConcatTable):
    """Child ``i`` on input element ``i``; the outputs as a list."""

    def forward(self, x: Any) -> list[Any]:
        kids = children_in_order(self)
        if len(x) < len(kids):
            raise InputShapeError(f"ParallelTable of {len(kids)} modules got {len(x)} inputs")
        return [kid(item) for kid, item in zip(kids, x, strict=False)]


class Parallel(nn.Module):
    """Child ``i`` on slice ``i`` of ``inputDimension``; outputs joined on ``outputDimension``."""

    def __init__(self, input_dimension: int, output_dimension: int, kids: list[nn.Module]) -> None:
        super().__init__()
        self.input_dimension = input_dimension
        self.output_dimension = output_dimension
        register_children(self, kids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slices = x.unbind(_dim(self.input_dimension, x))
        kids = children_in_order(self)
        if len(slices) > len(kids):
            raise InputShapeError(f"Parallel of {len(kids)} modules got {len(slices)} slices")
        outputs = [kid(part) for kid, part in zip(kids, slices, strict=False)]
        return torch.cat(outputs, dim=_dim(self.output_dimension, outputs[0]))

    def extra_repr(self) -> str:
        return f"input_dimension={self.input_dimension}, output_dimension={self.output_dimension}"


class Decorator(nn.Module):
    """dpnn's ``Decorator`` (and ``Serial``, which changes only how it is saved): its one
    child's forward."""

    def __init__(self, kid: nn.Module) -> None:
        super().__init__()
        self.add_module("0", kid)

    def forward(self, x: Any) -> Any:
        return self.get_submodule("0")(x)


class BatchDecorator(nn.Module):
    """dpnn's ``toBatch``/``fromBatch`` around one child: an input of ``n_dim`` dimensions gets
    a batch dimension of 1 for the child, removed again from the output (``nn.Inception``)."""

    def __init__(self, n_dim: int, kid: nn.Module) -> None:
        super().__init__()
        self.n_dim = n_dim
        self.add_module("0", kid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        online = x.dim() == self.n_dim
        output: torch.Tensor = self.get_submodule("0")(x.unsqueeze(0) if online else x)
        return output.squeeze(0) if online else output


def _dim(dimension: int, tensor: torch.Tensor) -> int:
    """A 1-based Torch7 dimension as a PyTorch one, checked against the tensor."""
    if not 1 <= dimension <= tensor.dim():
        raise InputShapeError(f"dimension {dimension} of a {tensor.dim()}-D tensor")
    return dimension - 1


@builds("nn.Concat")
def concat(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Concat(integer(obj, "dimension"), ctx.children(obj))


@builds("nn.DepthConcat")
def depth_concat(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return DepthConcat(integer(obj, "dimension"), ctx.children(obj))


@builds("nn.ConcatTable")
def concat_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return ConcatTable(ctx.children(obj))


@builds("nn.ParallelTable")
def parallel_table(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return ParallelTable(ctx.children(obj))


@builds("nn.Parallel")
def parallel(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    dims = integer(obj, "inputDimension"), integer(obj, "outputDimension")
    return Parallel(*dims, ctx.children(obj))


@builds("nn.Decorator", "nn.Serial")
def decorator(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Decorator(ctx.only_child(obj))


@builds("nn.Inception")
def inception(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    """dpnn's Inception: its ``DepthConcat`` (``modules[1]``) on 4-D batches."""
    return BatchDecorator(3, ctx.only_child(obj))
