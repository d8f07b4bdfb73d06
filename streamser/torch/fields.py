"""Reading the fields of a loaded Torch7 module, with Lua's rules and clear errors.

Loaded modules are ``TorchObject``s whose fields are whatever Lua held: numbers arrive as
``int`` or ``float``, ``LongStorage`` sizes as ``Storage``, lists as ``LuaTable``. These helpers
turn them into Python values and say which field of which class is wrong when one is.

Truth has two meanings in Torch7: Lua code tests ``if self.train then`` (only ``nil`` and
``false`` are false, so ``0`` is true), while C functions called through LuaJIT's FFI receive a
``bool`` (``0`` converts to false). OpenCV's test nets set ``train = 0``: their Dropout would be
in training mode and their BatchNormalization in evaluation mode, and both are what Torch7 did.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streamser import LuaTable, Storage, TorchObject

from .errors import InvalidModuleError

_MISSING: Any = object()


def lua_truthy(value: Any) -> bool:
    """Lua's ``if value then``: everything but ``nil`` and ``false`` is true."""
    return value is not None and value is not False


def ffi_bool(value: Any) -> bool:
    """A Lua value passed to a C ``bool`` through LuaJIT's FFI: ``nil``, ``false``, 0 are false."""
    return lua_truthy(value) and not (isinstance(value, (int, float)) and value == 0)


def field(obj: TorchObject, name: str, default: Any = _MISSING) -> Any:
    """A field's raw value; a missing field without a default is an error."""
    value = obj.get(name)
    if value is None:
        if default is _MISSING:
            raise InvalidModuleError(f"{obj.typename} has no field {name!r}")
        return default
    return value


def number(obj: TorchObject, name: str, default: Any = _MISSING) -> float:
    """A numeric field as a float (booleans are not numbers in Lua)."""
    value = field(obj, name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidModuleError(f"{obj.typename}.{name} should be a number, got {value!r}")
    return float(value)


def integer(obj: TorchObject, name: str, default: Any = _MISSING) -> int:
    """A numeric field that must hold an integer (a size, a stride, a dimension)."""
    value = number(obj, name, default)
    if not math.isfinite(value) or value != int(value):
        raise InvalidModuleError(f"{obj.typename}.{name} should be an integer, got {value!r}")
    return int(value)


def optional_integer(obj: TorchObject, name: str) -> int | None:
    """An integer field that Lua code tests for ``nil`` (``nInputDims``, ``numInputDims``)."""
    return None if field(obj, name, None) is None else integer(obj, name)


def flag(obj: TorchObject, name: str, default: bool = False) -> bool:
    """A field as Lua code reads it in ``if self.name then``; missing gives ``default``."""
    value = field(obj, name, None)
    return default if value is None else lua_truthy(value)


def sizes(obj: TorchObject, name: str) -> list[int]:
    """A list of integers held as a ``LongStorage``, a tensor or a Lua list."""
    value = field(obj, name)
    if isinstance(value, Storage):
        value = value.array
    if isinstance(value, LuaTable):
        value = value.to_list() if value.is_list() else None
    try:
        numbers = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        numbers = np.array([np.nan])
    if not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers)):
        raise InvalidModuleError(f"{obj.typename}.{name} should be a list of integers")
    return [int(n) for n in numbers]


def array(obj: TorchObject, name: str) -> np.ndarray[Any, Any] | None:
    """A tensor field, or None when absent or empty (Torch7's ``t:set()`` leaves size 0)."""
    value = field(obj, name, None)
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise InvalidModuleError(f"{obj.typename}.{name} should be a tensor, got {value!r}")
    return value if value.size else None


def children(obj: TorchObject) -> list[TorchObject]:
    """A container's ``modules`` list (empty for a leaf); every entry must be a module."""
    value = field(obj, "modules", None)
    if value is None:
        return []
    if isinstance(value, LuaTable) and value.is_list():
        value = value.to_list()
    if not isinstance(value, list) or not all(isinstance(m, TorchObject) for m in value):
        raise InvalidModuleError(f"{obj.typename}.modules should be a list of modules")
    return value
