"""Identity memo for the writer: ``id(obj) -> value`` that stays correct while memory stays bounded.

A memo keyed by ``id()`` is only sound while the object lives, since a dead object's id is reused
by the next allocation (a classic source of false sharing). Keeping every object alive is sound
but unbounded: a checkpoint streamed one tensor at a time would end up entirely in memory. So
the memo holds objects *weakly* where Python allows it (numpy arrays, streamser's own values)
and drops their entries the moment they die; plain ``dict``, ``list`` and ``tuple`` cannot be
referenced weakly and are held until the memo is dropped.

The callbacks that drop entries hold the memo weakly, so a memo and its entries make no reference
cycle: dropping the memo frees them at once, without work for the cyclic garbage collector. The
compiled writer (``streamser/_fastwrite.c``) is handed the memo and reads and fills ``entries``
directly, in this same layout: ``id(obj) -> (holder, value)``, one dict for the memo's life; its
callbacks call :func:`forget`.
"""

from __future__ import annotations

import weakref
from typing import Any

_STRONG_ONLY: set[type] = {dict, list, tuple}  # types Python cannot reference weakly


class IdentityMemo:
    """Maps live objects, by identity, to a value (an index, an address)."""

    __slots__ = ("__weakref__", "entries")

    def __init__(self) -> None:
        self.entries: dict[int, tuple[Any, Any]] = {}

    def get(self, obj: Any) -> Any:
        """The value stored for ``obj``, or None."""
        entry = self.entries.get(id(obj))
        return None if entry is None else entry[1]

    def put(self, obj: Any, value: Any) -> None:
        key = id(obj)
        holder: Any = obj  # not weakly referenceable: kept alive so that its id stays unique
        if type(obj) not in _STRONG_ONLY:
            memo = weakref.ref(self)
            try:
                holder = weakref.ref(obj, lambda _ref: forget(memo, key))
            except TypeError:
                _STRONG_ONLY.add(type(obj))
        self.entries[key] = (holder, value)

    def __len__(self) -> int:
        return len(self.entries)


def forget(memo: weakref.ref[IdentityMemo], key: int) -> None:
    """Drop the entry of an object that died (if its memo is still alive)."""
    alive = memo()
    if alive is not None:
        alive.entries.pop(key, None)
