"""An output buffer that grows without copying what it holds: decompression's destination.

A buffer that doubles by allocating anew and copying peaks at twice its contents (three times,
briefly, with the last piece written). Here the buffer is an anonymous private mapping, and
growing it is Linux ``mremap``: the kernel moves page tables, not bytes, so however often it
grows, memory in use is the bytes written plus at most one probe of ``PROBE`` bytes. Only the
address space reserved runs ahead (up to twice the contents, never past the ceiling), and it is
mapped without swap reservation. Where ``mremap`` does not exist (macOS, Windows), a larger
mapping is made and the contents copied, as a growing array would.

Data is written straight into the buffer by a ``readinto`` callable (a zstd stream reader), so
no intermediate ``bytes`` of the output exist either.
"""

from __future__ import annotations

import errno
import mmap
import sys
from collections.abc import Callable
from typing import Any

PROBE = 64 << 10  # bytes read ahead when the buffer is full, to learn whether more is coming
_LINUX_NORESERVE = 0x4000 if sys.platform.startswith("linux") else 0  # not in mmap before 3.12
_FLAGS = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_NORESERVE", _LINUX_NORESERVE)


class Overflow(Exception):
    """The source holds more than the caller allowed (internal: callers raise their error)."""


class OutOfMemory(Exception):
    """The system refused to grow the buffer (internal: callers raise a LimitError)."""


class GrowingBuffer:
    """Bytes appended by ``readinto`` callables, in one mapping that grows in place.

    ``capacity`` is the first reservation (keep it in proportion to the input, never to a
    claim) and ``ceiling`` the size it may never exceed.
    """

    def __init__(self, capacity: int, ceiling: int) -> None:
        self._ceiling = ceiling
        self._map = _new_map(max(1, min(capacity, ceiling)))
        self.size = 0

    def fill(self, readinto: Callable[[memoryview], int], most: int) -> int:
        """Append what ``readinto`` gives until it gives nothing; the number of bytes added.

        Raises :class:`Overflow` if it has more than ``most`` bytes (nothing past ``most`` is
        kept) and :class:`OutOfMemory` if the buffer cannot grow.
        """
        added = 0
        while True:
            space = min(len(self._map) - self.size, most - added)
            if space == 0:
                count = self._probe(readinto, most - added)
            else:
                count = _read_into(self._map, self.size, space, readinto)
                self.size += count
            if not count:
                return added
            added += count

    def _probe(self, readinto: Callable[[memoryview], int], allowed: int) -> int:
        """Read a little into scratch memory; if there is more, grow and keep it."""
        scratch = bytearray(PROBE if allowed else 1)
        count = readinto(memoryview(scratch))
        if not count:
            return 0
        if count > allowed or self.size + count > self._ceiling:
            raise Overflow
        self._grow(self.size + count)
        self._map[self.size : self.size + count] = scratch[:count]
        self.size += count
        return count

    def _grow(self, needed: int) -> None:
        target = min(self._ceiling, max(needed, 2 * len(self._map)))
        for size in (target, needed):  # a smaller step if the address space is tight
            try:
                self._map = _resized(self._map, size, self.size)
                return
            except (OSError, MemoryError, ValueError):
                continue
        raise OutOfMemory

    def result(self) -> Any:
        """The bytes written: the mapping cut to its contents (``b""`` when empty).

        The buffer cannot grow afterwards; the mapping lives as long as views of it do.
        """
        if self.size == 0:
            self._map.close()
            return b""
        if self.size < len(self._map):
            self._map = _resized(self._map, self.size, self.size)
        return self._map


def _new_map(size: int) -> mmap.mmap:
    try:
        return mmap.mmap(-1, size, flags=_FLAGS) if _FLAGS else mmap.mmap(-1, size)
    except (OSError, MemoryError, ValueError):
        raise OutOfMemory from None


def _read_into(
    target: mmap.mmap, start: int, count: int, readinto: Callable[[memoryview], int]
) -> int:
    """``readinto`` over ``target[start:start + count]``, the view released at once (a mapping
    cannot be resized while a view of it exists)."""
    with memoryview(target) as whole, whole[start : start + count] as space:
        return readinto(space)


def _resized(old: mmap.mmap, size: int, used: int) -> mmap.mmap:
    """``old`` at ``size`` bytes: in place with ``mremap``, else a new mapping and a copy."""
    try:
        old.resize(size)
        return old
    except (SystemError, OSError) as exc:  # SystemError: no mremap on this system
        if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
            raise  # a copy would need even more
        new = _new_map(size)
        with memoryview(old) as source:
            new[:used] = source[:used]
        old.close()
        return new
