"""Serialization modes of dpnn's ``nn.Serial`` applied while writing: heavy, medium, light.

heavy writes everything. medium clears what the modules' own ``clearState()`` clears, light also
the gradients of the parameters (the lists, and how each field is cleared, are in
:mod:`.serial_fields`). As in Torch, clearing works on *objects*: ``nn.utils.clear`` runs
``t:set()``, so a buffer tensor becomes empty wherever else it is referenced, in another
module's field, a plain table or the node data of an nngraph model. Every reference to it is
written as one empty tensor of its class (no dimensions, no storage), written once and then
referenced. What is kept is written as it is, with its sharing exact.

The writer writes in graph order and may meet a buffer (under ``cache``, or as another module's
field) before the module that names it, so the objects to clear are found first:
:meth:`SerialPlan.add` walks the tables and objects of the value (never tensor data; iterative,
each container once, memory in proportion to their number) and records

* every tensor held by a field that is emptied: written as its empty replacement everywhere;
* every table or object held by such a field that nothing else keeps: written as ``{}``.
  A table that the rest of the graph still reaches is written as it is (Torch gives the field a
  new ``{}`` and leaves the table to its other owners; an empty table would only add bytes);
* fields (and nngraph node data keys) that are removed, as the Lua code sets them to nil.

So a medium or light file is never larger than the heavy one, in the binary formats (in ascii,
where indices are decimal text, objects after a removed one get smaller indices, but an object
first met later may get a longer one).

The caller's objects are never changed: the writer's hook hands it replacements and copies, and
the writer's reference tracking stays keyed on the original objects.

A :class:`~streamser.values.lua.TableStream` produces its entries while it is written, so they
cannot be walked in advance. Each entry is walked when the stream yields it, before it is
written: what an entry holds is cleared like the rest, but a tensor already written in full by
an earlier entry (or elsewhere before the stream) is not cleared again by a later one, which
writes a reference to it. A module that the plan never saw (one returned by a ``hook``) is
cleared field by field when it is met.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import suppress
from typing import Any

import numpy as np

from ..errors import UnsupportedValueError
from ..graph.memo import IdentityMemo
from ..io.arrays import root_of
from ..spec.format import element_of
from ..values.lazy import LazyArray
from ..values.lua import (
    LuaFunction,
    LuaTable,
    Storage,
    TableStream,
    TorchObject,
    remember_class,
    remembered_class,
)
from ..values.tensors import empty_tensor
from .serial_fields import (
    MODES,
    NODE_DATA_DROPS,
    SERIAL_DROPS,
    SERIAL_FIELDS,
    add_serial_fields,
    fields_to_drop,
    fields_to_empty,
    is_module,
)

__all__ = [
    "MODES",
    "NODE_DATA_DROPS",
    "SERIAL_DROPS",
    "SERIAL_FIELDS",
    "SerialHook",
    "SerialPlan",
    "add_serial_fields",
    "fields_to_drop",
    "fields_to_empty",
    "is_module",
    "serial_hook",
]

_TENSORS = (np.ndarray, LazyArray)
_TABLES = (LuaTable, Mapping, list, tuple, TableStream)
_CONTAINERS = (TorchObject, LuaTable, Mapping, list, tuple, LuaFunction)
_LEAVES = frozenset({type(None), bool, int, float, str, bytes, Storage})  # never replaced
_WALK_LEAVES = _LEAVES | {np.ndarray, LazyArray}  # nothing to walk inside


def _is_table(value: Any) -> bool:
    """What Lua's ``type()`` calls a table: tables, and instances of Lua classes (modules)."""
    if isinstance(value, TorchObject):
        return isinstance(value.fields, Mapping)
    return isinstance(value, _TABLES)


def empty_replacement(tensor: Any) -> np.ndarray[Any, Any]:
    """Torch's ``t:set()`` of ``tensor``: an empty tensor of the same class."""
    replacement = empty_tensor(element_of(tensor.dtype))
    source = tensor.storage if isinstance(tensor, LazyArray) else root_of(tensor)
    cls = remembered_class(source)  # type: ignore[arg-type]  # lazy storages by identity too
    if cls is not None:  # keep a CUDA class name
        remember_class(replacement, cls)
    return replacement


class SerialPlan:
    """The objects one write clears, found by walking the value before it is written."""

    def __init__(self, mode: str, outer: tuple[SerialPlan, ...] = ()) -> None:
        self.mode = mode
        self.emptied = IdentityMemo()  # tensor or table -> what is written in its place
        self.dropped = IdentityMemo()  # module or table -> keys left out
        self.visited: set[int] = set()  # ids of the containers walked (alive: the value holds them)
        self._outer = outer  # plans whose containers this one does not walk again
        self._candidates: list[Any] = []  # tables held by emptied fields

    def add(self, value: Any) -> None:
        """Walk ``value`` (iteratively, each container once) and record what to clear."""
        stack = [value]
        visited, walked = self.visited, self.walked
        while stack:
            item = stack.pop()
            if type(item) in _WALK_LEAVES or not isinstance(item, _CONTAINERS) or walked(id(item)):
                continue
            visited.add(id(item))
            stack.extend(self._children(item))
        for table in self._candidates:
            if not self.walked(id(table)) and self.emptied.get(table) is None:
                self.emptied.put(table, LuaTable())
        self._candidates.clear()

    def walked(self, key: int) -> bool:
        if key in self.visited:
            return True
        return bool(self._outer) and any(key in plan.visited for plan in self._outer)

    def _children(self, item: Any) -> list[Any]:
        if isinstance(item, TorchObject):
            if is_module(item):
                return self._module_children(item)
            fields = item.fields
            return _pairs(fields) if isinstance(fields, Mapping) else [fields]
        if isinstance(item, (LuaTable, Mapping)):
            dropped = self.dropped.get(item) or ()
            return [x for k, v in item.items() if not _is_in(k, dropped) for x in (k, v)]
        if isinstance(item, LuaFunction):
            return [item.upvalues]
        return list(item)

    def _module_children(self, module: TorchObject) -> list[Any]:
        """The kept keys and values of ``module``; what its emptied fields hold is recorded."""
        emptied, drops = fields_to_empty(self.mode, module), fields_to_drop(self.mode, module)
        left_out: set[str] = set()
        children: list[Any] = []
        for key, value in module.fields.items():
            if isinstance(key, str) and (key in drops or key in emptied):
                if key in drops or not self._clear(value):
                    left_out.add(key)  # nn.utils.clear sets what is no tensor or table to nil
                continue
            children += (key, value)
        if left_out:
            self.dropped.put(module, frozenset(left_out))
        self._mark_node_data(module)
        return children

    def _clear(self, value: Any) -> bool:
        """Record ``value``, held by an emptied field; False if it is neither tensor nor table."""
        if isinstance(value, _TENSORS):
            # a tensor of no Torch type is left to the writer, which reports it with its path
            if self.emptied.get(value) is None:
                with suppress(UnsupportedValueError):
                    self.emptied.put(value, empty_replacement(value))
            return True
        if _is_table(value):
            self._candidates.append(value)
            return True
        return False

    def _mark_node_data(self, module: TorchObject) -> None:
        """nngraph: the keys ``gModule:clearState`` removes from its nodes' data tables."""
        for list_field, keys in NODE_DATA_DROPS.get(module.typename, ()):
            for node in _values(module.fields.get(list_field)):
                fields = node.fields if isinstance(node, TorchObject) else None
                data = fields.get("data") if isinstance(fields, Mapping) else None
                if isinstance(data, (LuaTable, Mapping)):
                    self.dropped.put(data, frozenset(keys).union(self.dropped.get(data) or ()))


class SerialHook:
    """The write hook of a serial mode: replaces what its plan clears (see the module doc)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.prepare(None)

    def prepare(self, value: Any) -> None:
        """Plan the write of ``value`` (call it before each value is written)."""
        root = SerialPlan(self.mode)
        root.add(value)
        self._plans = [root]
        self._late = SerialPlan(self.mode, (root,))  # modules no plan saw (a hook's new ones)
        self._root = (root, self._late)
        self._late_seen = IdentityMemo()

    def __call__(self, value: Any) -> Any:
        if type(value) in _LEAVES:
            return value
        for plan in (*self._plans, self._late) if len(self._plans) > 1 else self._root:
            replacement = plan.emptied.get(value)
            if replacement is not None:
                return replacement
            keys = plan.dropped.get(value) if plan.dropped else None
            if keys is not None:
                return _without(value, keys)
        if isinstance(value, TableStream):
            return TableStream(value.length, self._planned(value))
        if is_module(value) and not self._seen(value):
            return self._plan_late(value)
        return value

    def _seen(self, value: Any) -> bool:
        key = id(value)
        return any(key in plan.visited for plan in self._plans) or bool(self._late_seen.get(value))

    def _plan_late(self, module: TorchObject) -> Any:
        """Clear a module no plan walked, field by field, and write it."""
        self._late_seen.put(module, True)
        self._late._module_children(module)
        self._late.add(None)  # settles the tables its emptied fields held
        keys = self._late.dropped.get(module)
        return module if keys is None else _without(module, keys)

    def _planned(self, stream: TableStream) -> Iterator[tuple[Any, Any]]:
        """The entries of ``stream``, each walked before the writer gets it."""
        depth = len(self._plans)
        self._plans.append(SerialPlan(self.mode))
        try:
            for key, value in stream.consume():
                plan = SerialPlan(self.mode, tuple(self._plans[:depth]))
                plan.add((key, value))
                self._plans[depth] = plan
                yield key, value
        finally:
            del self._plans[depth:]


def serial_hook(mode: str) -> SerialHook | None:
    """A write hook that clears modules for ``mode``, or None for heavy (nothing to do).

    Call :meth:`SerialHook.prepare` with each value before writing it.
    """
    if mode not in MODES:
        raise ValueError(f"serial must be one of {', '.join(MODES)}, not {mode!r}")
    return None if mode == "heavy" else SerialHook(mode)


def _pairs(table: Mapping[Any, Any]) -> list[Any]:
    return [each for key, value in table.items() for each in (key, value)]


def _is_in(key: Any, names: Any) -> bool:
    return isinstance(key, str) and key in names


def _values(listed: Any) -> list[Any]:
    if isinstance(listed, (LuaTable, Mapping)):
        return list(listed.values())
    return list(listed) if isinstance(listed, (list, tuple)) else []


def _without(value: Any, keys: frozenset[str]) -> Any:
    """A copy of a module or table without ``keys`` (the original is left alone)."""
    if isinstance(value, TorchObject):
        return TorchObject(value.typename, _without(value.fields, keys), value.version)
    return LuaTable((k, v) for k, v in value.items() if not _is_in(k, keys))
