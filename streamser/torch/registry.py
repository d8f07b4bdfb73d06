"""The dispatch table of ``to_module``: one builder per Torch7 class name.

A builder takes the loaded module and a :class:`BuildContext` and returns a
``torch.nn.Module`` computing what the Torch7 module computed. The context gives it its
children (already built), its tensors under the names of ``names.py`` (so that the built
module's ``state_dict`` has exactly the keys of ``streamser.torch.state_dict``), and the path
used in error messages. Builders register with ``@builds("nn.Class", ...)``; the layer
families in ``layers/`` are imported by ``build.py`` to fill the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from streamser import TorchObject

from .errors import InvalidModuleError
from .fields import children
from .names import Entry, own_tensors
from .tensors import TensorMaker
from .tree import child_path

Builder = Callable[[TorchObject, "BuildContext"], nn.Module]
TrainRule = Callable[[Any], bool]

BUILDERS: dict[str, Builder] = {}
TRAIN_RULES: dict[str, TrainRule | None] = {}


def builds(*typenames: str, train: TrainRule | None = None) -> Callable[[Builder], Builder]:
    """Register a builder for these Torch7 classes. ``train`` is given for classes whose
    forward reads their ``train`` field, and reads it as their Torch7 code does (``nil``
    included); the others report a field they hold with Lua's truthiness."""

    def register(builder: Builder) -> Builder:
        for typename in typenames:
            BUILDERS[typename] = builder
            TRAIN_RULES[typename] = train
        return builder

    return register


class ChildBuilder(Protocol):
    def __call__(self, obj: TorchObject, path: str) -> nn.Module: ...


class BuildContext:
    """What a builder may ask for while it builds one module."""

    def __init__(
        self,
        path: str,
        maker: TensorMaker,
        build_child: ChildBuilder,
        parameters: dict[int, tuple[torch.Tensor, nn.Parameter]],
    ) -> None:
        self.path = path
        self.maker = maker
        self._build_child = build_child
        self._parameters = parameters

    def children(self, obj: TorchObject) -> list[nn.Module]:
        """The built ``modules`` of ``obj``, in order."""
        kids = children(obj)
        return [self._build_child(kid, child_path(self.path, i)) for i, kid in enumerate(kids)]

    def only_child(self, obj: TorchObject) -> nn.Module:
        """The one built module of a decorator (``modules[1]``), checked to be alone."""
        kids = self.children(obj)
        if len(kids) != 1:
            raise InvalidModuleError(f"{obj.typename} should hold one module, holds {len(kids)}")
        return kids[0]

    def entries(self, obj: TorchObject) -> dict[str, Entry]:
        """The tensors of ``obj`` by PyTorch name (see ``names.py``)."""
        return {entry.name: entry for entry in own_tensors(obj, self.maker)}

    def attach(self, module: nn.Module, obj: TorchObject) -> dict[str, torch.Tensor]:
        """Register ``obj``'s tensors on ``module`` (parameters and buffers, replacing any of
        the same name) and return them by name. One tensor becomes one ``nn.Parameter``, so
        weights Torch7 shared stay shared."""
        attached: dict[str, torch.Tensor] = {}
        for name, entry in self.entries(obj).items():
            if entry.buffer:
                module.register_buffer(name, entry.tensor)
                attached[name] = entry.tensor
            else:
                parameter = self._parameter(entry.tensor)
                module.register_parameter(name, parameter)
                attached[name] = parameter
        return attached

    def _parameter(self, tensor: torch.Tensor) -> nn.Parameter:
        hit = self._parameters.get(id(tensor))
        if hit is None:
            trainable = tensor.is_floating_point() or tensor.is_complex()
            hit = (tensor, nn.Parameter(tensor, requires_grad=trainable))
            self._parameters[id(tensor)] = hit
        return hit[1]

    def require(
        self, tensors: dict[str, torch.Tensor], name: str, typename: str, ndim: int | None = None
    ) -> torch.Tensor:
        """A tensor the module cannot work without, of ``ndim`` dimensions when given."""
        tensor = tensors.get(name)
        if tensor is None:
            raise InvalidModuleError(f"{typename} has no {name}")
        if ndim is not None and tensor.dim() != ndim:
            raise InvalidModuleError(f"{typename}.{name} should have {ndim} dimensions")
        return tensor

    def tensors(self, obj: TorchObject) -> dict[str, torch.Tensor]:
        """``entries`` without the parameter/buffer distinction."""
        return {name: entry.tensor for name, entry in self.entries(obj).items()}


def register_children(module: nn.Module, kids: list[nn.Module]) -> None:
    """Name children ``0``, ``1``, ... as ``torch.nn.Sequential`` does."""
    for index, kid in enumerate(kids):
        module.add_module(str(index), kid)


def children_in_order(module: nn.Module) -> list[nn.Module]:
    """Every child slot in order, a shared module at each of its places (``children()``
    would give it once)."""
    return [kid for kid in module._modules.values() if kid is not None]
