"""PyTorch names and layouts for the tensors of a loaded Torch7 module tree.

The rules, shared with ``to_module`` so that ``to_module(m).state_dict()`` has exactly the
keys of ``state_dict(m)``:

* a module with a ``modules`` list is a container; its children are named ``0``, ``1``, ... in
  order (Lua counts from 1, PyTorch from 0), and names nest with dots as in ``torch.nn``;
* a module's own tensors are its ``weight`` and ``bias`` (Torch7's default ``parameters()``),
  as parameters, in the layout PyTorch uses for the same layer: ``SpatialConvolutionMM`` keeps
  its weight as ``(nOut, nIn*kH*kW)``, PyTorch's ``Conv2d`` wants ``(nOut, nIn, kH, kW)``;
* batch normalization adds its running statistics as buffers, and ``num_batches_tracked``
  (zero: Torch7 does not count batches) as ``torch.nn.BatchNorm2d`` has them.

Every tensor shares memory with the loaded arrays where the layout is a view of them (all of
the above except the count); see ``tensors`` for read-only inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from streamser import TorchObject

from .errors import InvalidModuleError
from .fields import array, integer, number
from .tensors import ReadOnly, TensorMaker
from .tree import check_root, walk


class Entry(NamedTuple):
    """One tensor of a module, by its PyTorch name; buffers are not trained."""

    name: str
    tensor: torch.Tensor
    buffer: bool = False


Layout = Callable[[TorchObject, TensorMaker], list[Entry]]
LAYOUTS: dict[str, Layout] = {}


def layout(*typenames: str) -> Callable[[Layout], Layout]:
    """Register the function giving the tensors of modules of these classes."""

    def register(function: Layout) -> Layout:
        for typename in typenames:
            LAYOUTS[typename] = function
        return function

    return register


def own_tensors(obj: TorchObject, maker: TensorMaker) -> list[Entry]:
    """The tensors of ``obj`` itself (not of its children), parameters before buffers."""
    entries = LAYOUTS.get(obj.typename, weight_and_bias)(obj, maker)
    return sorted(entries, key=lambda entry: entry.buffer)


def weight_and_bias(obj: TorchObject, maker: TensorMaker) -> list[Entry]:
    """Torch7's default ``Module:parameters()``: the ``weight`` and ``bias`` tensors present."""
    found = ((name, array(obj, name)) for name in ("weight", "bias"))
    return [Entry(name, maker.tensor(a)) for name, a in found if a is not None]


@layout("nn.SpatialConvolution", "nn.SpatialConvolutionMM")
def convolution(obj: TorchObject, maker: TensorMaker) -> list[Entry]:
    """The weight as ``(nOutputPlane, nInputPlane, kH, kW)``, whatever Torch7 kept."""
    entries = weight_and_bias(obj, maker)
    if not entries or entries[0].name != "weight":
        raise InvalidModuleError(f"{obj.typename} has no weight")
    shape = tuple(integer(obj, name) for name in ("nOutputPlane", "nInputPlane", "kH", "kW"))
    weight = entries[0].tensor
    if weight.numel() != int(np.prod(shape)):
        raise InvalidModuleError(
            f"{obj.typename}.weight has {weight.numel()} elements, its sizes say {shape}"
        )
    entries[0] = Entry("weight", weight.reshape(shape))
    return entries


@layout(
    "nn.BatchNormalization",
    "nn.SpatialBatchNormalization",
    "nn.VolumetricBatchNormalization",
)
def batch_norm(obj: TorchObject, maker: TensorMaker) -> list[Entry]:
    """Affine parameters, then the running statistics and a batch count as buffers."""
    mean, var = array(obj, "running_mean"), running_var(obj)
    if mean is None or var is None:
        raise InvalidModuleError(f"{obj.typename} has no running statistics")
    count = torch.zeros((), dtype=torch.long)
    return [
        *weight_and_bias(obj, maker),
        Entry("running_mean", maker.tensor(mean), buffer=True),
        Entry("running_var", maker.tensor(var), buffer=True),
        Entry("num_batches_tracked", count, buffer=True),
    ]


def running_var(obj: TorchObject) -> np.ndarray[Any, Any] | None:
    """``running_var``, or the one BatchNormalization version 1 kept as ``running_std``
    (``1/sqrt(var + eps)``): converted as Torch7's own ``BN:read`` converts it."""
    var = array(obj, "running_var")
    std = array(obj, "running_std")
    if var is not None or std is None:
        return var
    converted: np.ndarray[Any, Any] = std**-2 - number(obj, "eps", 1e-5)
    return converted


def state_dict(module: Any, *, readonly: ReadOnly = "copy") -> dict[str, torch.Tensor]:
    """PyTorch's ``state_dict`` of a loaded Torch7 module tree, without building the modules.

    Works on any module tree, including classes ``to_module`` cannot build (their ``weight``
    and ``bias`` are named like any other module's), so that weights can be moved into a
    PyTorch model written by hand. Tensors share memory with the loaded arrays.

    >>> import streamser
    >>> seq = streamser.TorchObject("nn.Sequential", {"modules": [
    ...     streamser.TorchObject("nn.Linear", {"weight": np.zeros((2, 3)), "bias": np.zeros(2)})]})
    >>> {name: tuple(t.shape) for name, t in state_dict(seq).items()}
    {'0.weight': (2, 3), '0.bias': (2,)}
    """
    maker = TensorMaker(readonly)
    result: dict[str, torch.Tensor] = {}
    for obj, path, name in walk(check_root(module)):
        try:
            entries = own_tensors(obj, maker)
        except InvalidModuleError as error:
            raise InvalidModuleError(error.message, path) from None
        prefix = f"{name}." if name else ""
        result.update((prefix + entry.name, entry.tensor) for entry in entries)
    return result
