"""One-line jobs: a ``.t7`` file as a PyTorch ``state_dict``, and a ``state_dict`` as a ``.t7``.

``load_state_dict`` accepts a saved module tree (names from ``names.py``) or a saved table of
tensors (keys kept, as ``save_state_dict`` writes them), so that
``model.load_state_dict(streamser.torch.load_state_dict("model.t7"))`` works for both.
``save_state_dict`` writes a flat table ``{name = tensor}``: ``streamser.save`` takes torch
tensors as they are (CPU memory without a copy, other devices in bounded chunks).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

import streamser
from streamser import LuaTable, TorchObject, UnsupportedValueError

from .errors import TorchBridgeError
from .names import state_dict
from .tensors import ReadOnly, to_torch

PathLike = str | os.PathLike[str]


def load_state_dict(source: Any, *, readonly: ReadOnly = "copy") -> dict[str, torch.Tensor]:
    """The ``state_dict`` held by a ``.t7`` file (a path) or by an already loaded value.

    Tensors share memory with the file's mapping (see ``to_torch``). A table's keys must be
    strings or integers (integers become their decimal names).
    """
    value = streamser.load(source) if isinstance(source, (str, os.PathLike)) else source
    if isinstance(value, TorchObject):
        return state_dict(value, readonly=readonly)
    if not isinstance(value, (LuaTable, Mapping)):
        raise TorchBridgeError(
            f"expected a module or a table of tensors, got {type(value).__name__}"
        )
    tensors = to_torch(value, readonly=readonly)
    return {_key(key): _tensor(key, item) for key, item in tensors.items()}


def _key(key: Any) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TorchBridgeError(f"a state_dict key must be a string, got {key!r}")
    return str(key)


def _tensor(key: Any, item: Any) -> torch.Tensor:
    if not isinstance(item, torch.Tensor):
        raise TorchBridgeError(f"state_dict entry {key!r} is a {type(item).__name__}, not a tensor")
    return item


def save_state_dict(path: PathLike, tensors: Mapping[str, torch.Tensor], **options: Any) -> None:
    """Write ``tensors`` as a Torch7 table ``{name = tensor}``; ``options`` go to
    ``streamser.save`` (``format``, ``compress``, ``cast``, ...). Tensors that share a storage
    are written as views of one Torch7 storage, as Torch7 would (see
    :mod:`streamser.torch.adapt`)."""
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise UnsupportedValueError(f"expected a tensor, got {type(tensor).__name__}", name)
    streamser.save(path, {str(name): tensor for name, tensor in tensors.items()}, **options)
