"""Walking a loaded module tree: its ``modules`` lists, with Lua paths for messages.

A module can appear at several places (Torch7 shares modules by reference), but never inside
itself: a file that says so is damaged, and walking it would never end. Depth is bounded too,
since PyTorch's own module methods recurse once per level.
"""

from __future__ import annotations

from collections.abc import Iterator

from streamser import TorchObject

from .errors import InvalidModuleError, TorchBridgeError
from .fields import children

MAX_DEPTH = 200


def child_path(path: str, index: int) -> str:
    """The dotted path of ``modules[index]`` (0-based) below ``path``, in Lua's 1-based form."""
    step = f"modules.{index + 1}"
    return f"{path}.{step}" if path else step


def child_name(name: str, index: int) -> str:
    """The PyTorch name of ``modules[index]`` (0-based) below ``name``: ``0``, ``3.1``."""
    return f"{name}.{index}" if name else str(index)


def check_root(value: object) -> TorchObject:
    """``value`` if it is a Torch7 object, else an error saying what was given instead."""
    if not isinstance(value, TorchObject):
        raise TorchBridgeError(
            f"expected a loaded Torch7 module (a TorchObject such as nn.Sequential), "
            f"got {type(value).__name__}"
        )
    return value


def walk(root: TorchObject) -> Iterator[tuple[TorchObject, str, str]]:
    """Every module of the tree with its Lua path and its PyTorch name (``modules.2`` and
    ``1``), parents first, once per place it appears."""
    stack: list[tuple[TorchObject, str, str, tuple[int, ...]]] = [(root, "", "", ())]
    while stack:
        obj, path, name, ancestors = stack.pop()
        if id(obj) in ancestors:
            raise InvalidModuleError("a module contains itself", path)
        if len(ancestors) >= MAX_DEPTH:
            raise InvalidModuleError(f"modules nested deeper than {MAX_DEPTH} levels", path)
        yield obj, path, name
        try:
            kids = children(obj)
        except InvalidModuleError as error:
            raise InvalidModuleError(error.message, path) from None
        inner = (*ancestors, id(obj))
        stack.extend(
            (kid, child_path(path, i), child_name(name, i), inner)
            for i, kid in reversed(list(enumerate(kids)))
        )
