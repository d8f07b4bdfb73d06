"""The memory behind numpy arrays: roots, addresses, byte views, bounded chunks, mapped files.

Nothing here knows Torch7: these are the facts about an array's memory that the writer (where
its bytes come from, whether the kernel can copy them file to file) and the lazy reader need.
"""

from __future__ import annotations

import mmap
import os
import sys
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np

Array = np.ndarray[Any, Any]


class ChunkSource(Protocol):
    """Elements that are not in this process's memory as one array (a GPU tensor, a type numpy
    lacks): a writer pulls them in order as host arrays of at most about ``max_bytes`` each."""

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy type of the chunks."""

    @property
    def size(self) -> int:
        """How many elements the chunks hold in all."""

    def chunks(self, max_bytes: int) -> Iterator[Array]:
        """The elements in C order, as contiguous 1-D arrays of at most about ``max_bytes``."""


def root_of(array: Array) -> Array:
    """The ndarray that owns (or first wraps) the memory ``array`` views.

    The views of ``np.lib.stride_tricks`` (``as_strided``, ``sliding_window_view``) hang from
    a wrapper object whose own ``base`` is the array they view: they are followed through it.
    """
    root = array
    while True:
        base = root.base
        if not isinstance(base, np.ndarray):
            inner = getattr(base, "base", None)
            if not (isinstance(inner, np.ndarray) and hasattr(base, "__array_interface__")):
                return root
            base = inner
        root = base


def address_of(array: Array) -> int:
    """Where ``array``'s first element sits in memory."""
    return int(array.__array_interface__["data"][0])


class FileMapping(NamedTuple):
    """Where a contiguous array's bytes lie, when it views a shared mapping of a file."""

    mapping: mmap.mmap  # the mapping the array views (the user's own)
    start: int  # byte offset of the array's first byte inside ``mapping``
    path: str  # the file's name when it was mapped (it may name another file since)
    offset: int  # byte offset of the array's first byte in that file


def file_mapping(array: Array) -> FileMapping | None:
    """The shared file mapping a contiguous array views, or None.

    Only ``np.memmap`` arrays mapped shared (modes r, r+, w+) qualify: there the page cache is
    the file's content, so a kernel copy of the file sees exactly the array's bytes, edits
    included. Copy-on-write mappings (mode c) may differ from their file and never qualify.
    """
    mapped: Any = array
    while isinstance(mapped, np.ndarray) and not isinstance(mapped.base, mmap.mmap):
        mapped = mapped.base
    if not isinstance(mapped, np.memmap) or mapped.mode not in ("r", "r+", "w+"):
        return None
    filename = getattr(mapped, "filename", None)
    if not filename:
        return None
    mapping = mapped.base
    if not isinstance(mapping, mmap.mmap):
        return None
    try:
        whole = np.frombuffer(mapping, np.uint8)  # where the mapping starts (no copy)
    except (ValueError, TypeError):  # closed
        return None
    start = address_of(array) - address_of(whole)
    del whole
    offset = int(mapped.offset) + address_of(array) - address_of(mapped)
    return FileMapping(mapping, start, str(filename), offset)


def mapped_file_identity(array: Array) -> tuple[int, int] | None:
    """(device, inode) of the file mapped at ``array``'s first byte, from ``/proc/self/maps``
    (Linux); None where unknown. A file's name may have moved on to another file since it was
    mapped; this is the file the mapping holds."""
    address = address_of(array)
    try:
        with open("/proc/self/maps", "rb") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                low, _, high = fields[0].partition(b"-")
                if int(low, 16) <= address < int(high, 16):
                    major, _, minor = fields[3].partition(b":")
                    return os.makedev(int(major, 16), int(minor, 16)), int(fields[4])
    except (OSError, ValueError, IndexError):
        return None
    return None


def mostly_mapped_in(array: Array, samples: int = 32) -> bool:
    """Are most of ``array``'s pages already in this process's page tables (Linux)?

    A mapping already faulted in is written as it is; one that is not is faulted in a window
    at a time first (see :mod:`streamser.io.windows`). Evenly spaced pages are looked up in
    ``/proc/self/pagemap`` (bit 63 of each 8-byte entry: present), a few microseconds each.
    False where that file cannot be read.
    """
    page = mmap.PAGESIZE
    first = address_of(array) // page
    pages = max(1, (address_of(array) + array.nbytes - 1) // page - first + 1)
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return False
    try:
        present = 0
        for k in range(samples):
            entry = os.pread(fd, 8, (first + pages * k // samples) * 8)
            if len(entry) < 8:
                return False
            present += int.from_bytes(entry, sys.byteorder) >> 63
    except OSError:
        return False
    finally:
        os.close(fd)
    return present * 2 > samples


def byte_view(array: Array) -> memoryview:
    """The bytes of a contiguous array, without copying them."""
    view: memoryview = memoryview(array.data).cast("B")  # type: ignore[arg-type,unused-ignore]
    return view


def iter_chunks(array: Array | ChunkSource, max_bytes: int) -> Iterator[Array]:
    """C-order pieces of ``array``, each contiguous and at most about ``max_bytes``.

    A contiguous array yields views; a strided one yields bounded copies, one block of rows at a
    time, so a huge non-contiguous view is never copied whole. A :class:`ChunkSource` yields
    its own chunks.
    """
    if not isinstance(array, np.ndarray):
        yield from array.chunks(max_bytes)
        return
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
        step = max(1, max_bytes // max(1, array.itemsize))
        for start in range(0, flat.shape[0], step):
            yield flat[start : start + step]
        return
    if array.nbytes <= max_bytes or array.ndim <= 1:
        if array.ndim <= 1 and array.nbytes > max_bytes:
            step = max(1, max_bytes // max(1, array.itemsize))
            for start in range(0, array.shape[0], step):
                yield np.ascontiguousarray(array[start : start + step])
            return
        yield np.ascontiguousarray(array).reshape(-1)
        return
    row_bytes = array[0].nbytes if array.shape[0] else 1
    rows = max_bytes // max(1, row_bytes)
    if rows >= 1:
        for start in range(0, array.shape[0], rows):
            yield np.ascontiguousarray(array[start : start + rows]).reshape(-1)
    else:
        for index in range(array.shape[0]):
            yield from iter_chunks(array[index], max_bytes)
