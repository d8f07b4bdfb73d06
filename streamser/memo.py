"""Identity memo for the writer: ``id(obj) -> value`` that stays correct while memory stays bounded.

A memo keyed by ``id()`` is only sound while the object lives, since a dead object's id is reused
by the next allocation (a classic source of false sharing). Keeping every object alive is sound
but unbounded: a checkpoint streamed one tensor at a time would end up entirely in memory. So
the memo holds objects *weakly* where Python allows it (numpy arrays, streamser's own values)
and drops their entries the moment they die; plain ``dict``, ``list`` and ``tuple`` cannot be
referenced weakly and are held until the memo is dropped.
"""

from __future__ import annotations

import weakref
from typing import Any

_STRONG_ONLY: set[type] = {dict, list, tuple}  # types Python cannot reference weakly


class IdentityMemo:
    """Maps live objects, by identity, to a value (an index, an address)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[int, tuple[Any, Any]] = {}

    def get(self, obj: Any) -> Any:
        """The value stored for ``obj``, or None."""
        entry = self._entries.get(id(obj))
        return None if entry is None else entry[1]

    def put(self, obj: Any, value: Any) -> None:
        key = id(obj)
        entries = self._entries
        holder: Any = obj  # not weakly referenceable: kept alive so that its id stays unique
        if type(obj) not in _STRONG_ONLY:
            try:
                holder = weakref.ref(obj, lambda _ref: entries.pop(key, None))
            except TypeError:
                _STRONG_ONLY.add(type(obj))
        entries[key] = (holder, value)

    def __len__(self) -> int:
        return len(self._entries)
