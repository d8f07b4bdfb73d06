"""numpy arrays to torch tensors that share their memory, for whole loaded values.

``streamser.load`` maps files privately (copy-on-write), so its arrays are writable and
``torch.from_numpy`` shares them as they are: nothing is read or copied until a tensor's pages
are touched, and writes stay private to the process. Arrays numpy marks read-only (those of
``streamser.deserialize(bytes)``, or made read-only by the caller) need a decision, since
PyTorch has no read-only tensors and writing through an alias of an immutable buffer is
undefined behaviour:

* ``readonly="copy"`` (the default): the array's storage is copied once and every view of that
  storage becomes a view of the one copy, so tensors that shared memory still do;
* ``readonly="share"``: no copy, and no warning; the caller promises never to write to the
  tensor (use it for inference on huge immutable buffers).

To share without either, give writable memory: ``deserialize(bytearray(data))``, or a
copy-on-write ``np.memmap(..., mode="c")`` rather than ``mode="r"``.

Byte orders other than the machine's, and negative strides (which PyTorch refuses), are
converted by a copy of that array alone; Torch7 data never has either.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from streamser import LuaFunction, LuaTable, Storage, TorchObject

ReadOnly = Literal["copy", "share"]
_READONLY_CHOICES = ("copy", "share")


class TensorMaker:
    """Makes one tensor per numpy array object, keeping the array alive (ids are not reused).

    >>> maker = TensorMaker()
    >>> a = np.arange(6.0)
    >>> t = maker.tensor(a)
    >>> t is maker.tensor(a), t.data_ptr() == a.ctypes.data
    (True, True)
    """

    def __init__(self, readonly: ReadOnly = "copy") -> None:
        if readonly not in _READONLY_CHOICES:
            raise ValueError(f"readonly must be one of {_READONLY_CHOICES}, got {readonly!r}")
        self.readonly = readonly
        self._tensors: dict[int, tuple[np.ndarray[Any, Any], torch.Tensor]] = {}
        self._copies: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}

    def tensor(self, array: np.ndarray[Any, Any]) -> torch.Tensor:
        """The tensor of ``array``: the same object every time the same array is given."""
        hit = self._tensors.get(id(array))
        if hit is not None:
            return hit[1]
        tensor = self._convert(array)
        self._tensors[id(array)] = (array, tensor)
        return tensor

    def _convert(self, array: np.ndarray[Any, Any]) -> torch.Tensor:
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        if any(stride < 0 for stride in array.strides):
            array = np.ascontiguousarray(array)
        if array.flags.writeable:
            return torch.from_numpy(array)
        if self.readonly == "share":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not writable.*")
                return torch.from_numpy(array)
        return torch.from_numpy(self._writable_twin(array))

    def _writable_twin(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """``array`` as the same view of a writable copy of its storage (its innermost base)."""
        root = _root(array)
        if not root.flags.c_contiguous:
            return array.copy()
        hit = self._copies.get(id(root))
        if hit is None:
            hit = (root, root.copy())
            self._copies[id(root)] = hit
        copy = hit[1]
        offset = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        return np.ndarray(
            array.shape, array.dtype, buffer=copy.data, offset=offset, strides=array.strides
        )


def _root(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The last numpy array in the chain of bases (a loaded storage's array)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def to_torch(value: Any, *, readonly: ReadOnly = "copy") -> Any:
    """``value`` with every numpy array (and ``Storage``) turned into a ``torch.Tensor``.

    Containers (``LuaTable``, ``TorchObject``, ``dict``, ``list``, ``tuple``, ``LuaFunction``
    upvalues) are rebuilt around the tensors; the input is left as it was. Sharing and cycles
    are kept: an object reached twice gives one result, and one numpy array one tensor. Tensors
    share memory with the arrays (mapped data is not read); a ``Storage`` becomes a 1-D tensor
    of its elements. See the module docstring for ``readonly``.

    >>> import streamser
    >>> t = streamser.LuaTable({"w": np.ones(2, np.float32)})
    >>> t["again"] = t["w"]
    >>> out = to_torch(t)
    >>> out["w"], out["w"] is out["again"]
    (tensor([1., 1.]), True)
    """
    return _Converter(TensorMaker(readonly)).run(value)


class _Converter:
    """A non-recursive rebuild: each container is made empty first, then filled from a stack,
    so depth costs no Python recursion and cycles close on themselves."""

    def __init__(self, maker: TensorMaker) -> None:
        self._maker = maker
        self._made: dict[int, tuple[Any, Any]] = {}
        self._pending: list[tuple[Any, Any]] = []

    def run(self, value: Any) -> Any:
        result = self.shell(value)
        while self._pending:
            source, target = self._pending.pop()
            _FILLERS[type(target)](self, source, target)
        return result

    def shell(self, value: Any) -> Any:
        """The converted value; a container comes back empty and is filled later."""
        maker = _SHELLS.get(type(value))
        if maker is None:
            if not isinstance(value, np.ndarray):
                return value
            maker = _SHELLS[np.ndarray]
        hit = self._made.get(id(value))
        if hit is not None:
            return hit[1]
        result = maker(self, value)
        self._made[id(value)] = (value, result)
        if type(result) in _FILLERS:
            self._pending.append((value, result))
        return result

    def fill_table(self, source: LuaTable, target: LuaTable) -> None:
        for key, item in source.items():
            target[self.shell(key)] = self.shell(item)

    def fill_dict(self, source: dict[Any, Any], target: dict[Any, Any]) -> None:
        for key, item in source.items():
            target[self.shell(key)] = self.shell(item)

    def fill_list(self, source: list[Any], target: list[Any]) -> None:
        target.extend(self.shell(item) for item in source)

    def fill_object(self, source: TorchObject, target: TorchObject) -> None:
        target.fields = self.shell(source.fields)

    def fill_function(self, source: LuaFunction, target: LuaFunction) -> None:
        target.upvalues = self.shell(source.upvalues)


_SHELLS: dict[type, Callable[[_Converter, Any], Any]] = {
    np.ndarray: lambda c, v: c._maker.tensor(v),
    Storage: lambda c, v: c._maker.tensor(v.array),
    LuaTable: lambda c, v: LuaTable(),
    dict: lambda c, v: {},
    list: lambda c, v: [],
    tuple: lambda c, v: tuple(c.shell(item) for item in v),
    TorchObject: lambda c, v: TorchObject(v.typename, None, v.version),
    LuaFunction: lambda c, v: LuaFunction(v.bytecode, None, v.tag),
}

_FILLERS: dict[type, Callable[[_Converter, Any, Any], None]] = {
    LuaTable: _Converter.fill_table,
    dict: _Converter.fill_dict,
    list: _Converter.fill_list,
    TorchObject: _Converter.fill_object,
    LuaFunction: _Converter.fill_function,
}
