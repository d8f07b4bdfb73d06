"""Walking a value in memory: every tensor with its path, and a printable outline.

Iterative (no recursion, so any depth works) and cycle-safe: each table, object or function is
visited once, and a second path to it is reported as shared. Paths are those of
:mod:`.paths`, in the order of the value's tables, so that a loaded value walks to the same
first paths as the index its file was read with (:mod:`.index`): keys that are tables or
tensors are walked too, as ``{#n}``, and the values under them as ``[#n]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

import numpy as np

from ..values.lazy import LazyArray
from ..values.lua import LuaFunction, LuaTable, Storage, TorchObject
from .paths import ROOT, UPVALUES, Entry, KeyOf, Part, format_part, join

_PLAIN_KEYS: Final = (str, bytes, int, float, bool)
_CONTAINERS: Final = (Mapping, list, tuple, LuaFunction, np.ndarray, Storage, LazyArray)


def _children(value: Any) -> list[tuple[Part, Any]]:
    if isinstance(value, TorchObject):  # transparent: its fields follow it directly
        value = value.fields if isinstance(value.fields, Mapping) else {}
    if isinstance(value, Mapping):
        pairs = value._entries.values() if isinstance(value, LuaTable) else value.items()
        children: list[tuple[Part, Any]] = []
        for number, (key, child) in enumerate(pairs, 1):
            if isinstance(key, _PLAIN_KEYS):
                children.append((key, child))
            else:
                children += [(KeyOf(number), key), (Entry(number), child)]
        return children
    if isinstance(value, (list, tuple)):
        return list(enumerate(value, 1))
    if isinstance(value, LuaFunction):
        return [(UPVALUES, value.upvalues)]
    return []


def _walk(value: Any) -> Iterator[tuple[str, Any, int, bool, str]]:
    """(path, value, depth, seen_before, last part as printed) for everything reachable."""
    seen: set[int] = set()
    stack: list[tuple[str, Any, int, str]] = [("", value, 0, ROOT)]
    while stack:
        path, item, depth, name = stack.pop()
        container = isinstance(item, _CONTAINERS)
        again = container and id(item) in seen
        yield path, item, depth, again, name
        if again or not container:
            continue
        seen.add(id(item))
        children = _children(item)
        stack.extend(
            (join(path, part), child, depth + 1, format_part(part, True))
            for part, child in reversed(children)
        )


def walk(value: Any) -> Iterator[tuple[str, Any, int, bool]]:
    """(path, value, depth, seen_before) for every value reachable from ``value``, depth first
    in the tables' order; the root's path is ""."""
    for path, item, depth, again, _name in _walk(value):
        yield path, item, depth, again


def tensors(value: Any) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """Every distinct ndarray reachable from ``value``, with the first path that reaches it."""
    for path, item, _depth, again in walk(value):
        if isinstance(item, np.ndarray) and not again:
            yield path or ROOT, item


def summary(value: Any) -> str:
    """One line for a value: class and shape for tensors, length for containers."""
    if isinstance(value, (np.ndarray, LazyArray)):
        return f"{value.dtype} {list(value.shape)} ({value.nbytes:,} bytes)"
    if isinstance(value, Storage):
        return f"{value.typename} of {len(value)}"
    if isinstance(value, TorchObject):
        return f"{value.typename} (version {value.version})"
    if isinstance(value, (LuaTable, Mapping, list, tuple)):
        kind = "table" if type(value) in (LuaTable, dict, list, tuple) else type(value).__name__
        return f"{kind} of {len(value)}"
    if isinstance(value, LuaFunction):
        return f"function ({len(value.bytecode)} bytes of bytecode)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def outline(value: Any, max_lines: int = 200) -> str:
    """An indented tree of ``value`` for people to read."""
    lines: list[str] = []
    for _path, item, depth, again, name in _walk(value):
        if len(lines) == max_lines:
            lines.append("...")
            break
        note = "  (shared, shown above)" if again else ""
        lines.append(f"{'  ' * depth}{name}: {summary(item)}{note}")
    return "\n".join(lines)
