"""Walking a loaded value: every tensor with its path, and a printable outline.

Iterative (no recursion, so any depth works) and cycle-safe: each table, object or function is
visited once, and a second path to it is reported as shared.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..values.lazy import LazyArray
from ..values.lua import LuaFunction, LuaTable, Storage, TorchObject


def _join(path: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _children(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, TorchObject):
        fields = value.fields
        return list(fields.items()) if isinstance(fields, Mapping) else [("<payload>", fields)]
    if isinstance(value, (LuaTable, Mapping)):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value, 1))
    if isinstance(value, LuaFunction):
        return [("<upvalues>", value.upvalues)]
    return []


def walk(value: Any) -> Iterator[tuple[str, Any, int, bool]]:
    """(path, value, depth, seen_before) for every value reachable from ``value``, depth first."""
    seen: set[int] = set()
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        container = isinstance(
            item, (LuaTable, Mapping, list, tuple, LuaFunction, np.ndarray, Storage, LazyArray)
        )
        again = container and id(item) in seen
        yield path, item, depth, again
        if again or not container:
            continue
        seen.add(id(item))
        children = _children(item)
        stack.extend((_join(path, key), child, depth + 1) for key, child in reversed(children))


def tensors(value: Any) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """Every distinct ndarray reachable from ``value``, with the first path that reaches it."""
    for path, item, _depth, again in walk(value):
        if isinstance(item, np.ndarray) and not again:
            yield path, item


def summary(value: Any) -> str:
    """One line for a value: class and shape for tensors, length for containers."""
    if isinstance(value, (np.ndarray, LazyArray)):
        return f"{value.dtype} {list(value.shape)} ({value.nbytes:,} bytes)"
    if isinstance(value, Storage):
        return f"{value.typename} of {len(value)}"
    if isinstance(value, TorchObject):
        return f"{value.typename} (version {value.version})"
    if isinstance(value, (LuaTable, Mapping, list, tuple)):
        return f"table of {len(value)}"
    if isinstance(value, LuaFunction):
        return f"function ({len(value.bytecode)} bytes of bytecode)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def outline(value: Any, max_lines: int = 200) -> str:
    """An indented tree of ``value`` for people to read."""
    lines: list[str] = []
    for path, item, depth, again in walk(value):
        if len(lines) == max_lines:
            lines.append("...")
            break
        name = path.rsplit(".", 1)[-1] if path else "<root>"
        note = "  (shared, shown above)" if again else ""
        lines.append(f"{'  ' * depth}{name}: {summary(item)}{note}")
    return "\n".join(lines)
