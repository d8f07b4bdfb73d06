"""Memory made hot before a timed region, the same way for every contender.

On these VMs free guest memory is handed back to the host after about two seconds (virtio
balloon free page reporting), and page cache that no process maps is paged out when idle
(DAMON). Memory that comes back from the host is several times slower at first touch: a fill of
512 MiB of fresh memory takes 65 ms right after other memory was freed and 620-820 ms after two
seconds of idleness. So before each timed run the worker reads one byte of every page of the
input and of the contender's own buffers (``touch``), and writes a scratch region as large as
the data and frees it (``scratch``): the pages the operation then gets for its output, page
cache or arrays, come from that hot, just-freed memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np

PAGE = mmap.PAGESIZE


def touch(array: Any) -> int:
    """Read one byte of every page of ``array``'s memory (mapped or anonymous); the sum."""
    data = np.asarray(array)
    if data.size == 0 or not data.flags.c_contiguous:
        return 0
    flat = data.reshape(-1).view(np.uint8)
    return int(flat[::PAGE].sum(dtype=np.uint64))


def arrays_in(value: Any) -> Iterator[Any]:
    """The arrays of a benchmark value: a dict of arrays, a list of record dicts, or a tuple
    of those (as safetensors takes them)."""
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from arrays_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from arrays_in(item)


def touch_value(value: Any) -> None:
    """``touch`` every array of a benchmark value. Small arrays share pages, so records
    cost one Python call per array, about 20 ms for 100,000."""
    for array in arrays_in(value):
        touch(array)


def scratch(nbytes: int) -> None:
    """Write one byte of every page of ``nbytes`` of fresh memory, then free it."""
    if nbytes <= 0:
        return
    region = np.empty(nbytes, np.uint8)
    region[::PAGE] = 1
    del region


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def malloc_trim() -> None:
    """Give the C heap's free memory back to the kernel (glibc), so that what a run allocates
    is counted in its own window and not hidden in memory an earlier run left free."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
