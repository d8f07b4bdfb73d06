"""``to_module``: a loaded Torch7 module tree as a runnable ``torch.nn.Module``.

The tree is checked whole first, so that one ``UnsupportedModuleError`` lists every class
that has no builder. Then each module is built once (a module Torch7 shares between two
places becomes one PyTorch module at both), children before parents, and given the
train/evaluate state its ``train`` field held.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from streamser import TorchObject

from . import layers  # noqa: F401  (fills the dispatch table)
from .errors import InvalidModuleError, UnsupportedModuleError
from .fields import lua_truthy
from .registry import BUILDERS, TRAIN_RULES, BuildContext
from .tensors import ReadOnly, TensorMaker
from .tree import check_root, walk


def to_module(module: Any, *, readonly: ReadOnly = "copy") -> nn.Module:
    """A ``torch.nn.Module`` whose forward computes what the Torch7 module's forward did.

    Parameters and buffers share memory with the loaded arrays (mapped data stays lazy; see
    ``to_torch`` for ``readonly``), in the dtype Torch7 kept (a ``DoubleTensor`` model takes
    float64 inputs; call ``.float()`` for float32). Each module starts in the train or evaluate
    state its ``train`` field says. Tables of tensors (inputs and outputs of ``ConcatTable``,
    ``JoinTable``, ...) are Python lists. Raises ``UnsupportedModuleError`` naming every
    class of the tree that has no builder (``supported_classes()`` lists those that have).
    """
    root = check_root(module)
    check_supported(root)
    return _Builder(TensorMaker(readonly)).build(root, "")


def supported_classes() -> list[str]:
    """The Torch7 class names ``to_module`` can build, sorted."""
    return sorted(BUILDERS)


def check_supported(root: TorchObject) -> None:
    """Raise one error listing every class of the tree without a builder."""
    missing: dict[str, list[str]] = {}
    for obj, path, _ in walk(root):
        if obj.typename not in BUILDERS:
            missing.setdefault(obj.typename, []).append(path)
    if missing:
        raise UnsupportedModuleError(missing)


class _Builder:
    def __init__(self, maker: TensorMaker) -> None:
        self._maker = maker
        self._built: dict[int, tuple[TorchObject, nn.Module]] = {}
        self._parameters: dict[int, tuple[torch.Tensor, nn.Parameter]] = {}

    def build(self, obj: TorchObject, path: str) -> nn.Module:
        hit = self._built.get(id(obj))
        if hit is not None:
            return hit[1]
        context = BuildContext(path, self._maker, self.build, self._parameters)
        try:
            module = BUILDERS[obj.typename](obj, context)
        except InvalidModuleError as error:
            raise InvalidModuleError(error.message, error.path or path) from None
        module.training = _training(obj, module)
        self._built[id(obj)] = (obj, module)
        return module


def _training(obj: TorchObject, module: nn.Module) -> bool:
    """The module's ``train`` field as its class reads it. A class whose forward ignores the
    field and does not hold it trains when a child does, or, as a leaf, like a fresh Torch7
    module (training)."""
    value, rule = obj.get("train"), TRAIN_RULES[obj.typename]
    if rule is not None:
        return rule(value)
    if value is not None:
        return lua_truthy(value)
    kids = list(module.children())
    return any(kid.training for kid in kids) if kids else True
