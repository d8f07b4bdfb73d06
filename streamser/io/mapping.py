"""Where input bytes come from: a private mapping of a file, its whole contents, or a stream.

A reader works over one buffer: a private copy-on-write mapping of a regular file (tensor data
is then read only when touched, or pre-faulted in parallel on request), the file's contents
read into memory by a few threads at once, or the bytes of anything else.
"""

from __future__ import annotations

import io
import mmap as _mmap
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..spec.limits import out_of_memory, refused_memory
from .parallel import resolve_threads, run_split

_MADV_POPULATE_READ = 22  # Linux 5.14: fault pages in (read) without touching them one by one


def map_file(
    fileobj: Any, *, mmap: bool, threads: int | None = None, populate: bool = False
) -> Any | None:
    """A private copy-on-write mapping of a regular file (views never change the file), or
    the file's whole contents when ``mmap`` is False; None when the object has no usable
    file descriptor. ``threads`` read the contents, or with ``populate`` pre-fault the mapping
    (see :mod:`.parallel`)."""
    try:
        fd = fileobj.fileno()
        info = os.fstat(fd)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    if info.st_size == 0:
        return b""
    if not mmap:
        return read_whole(fd, info.st_size, threads=threads)
    mapped = _mmap.mmap(fd, 0, access=_mmap.ACCESS_COPY)
    if populate:
        prefault(mapped, threads=threads)
    return mapped


def read_whole(fd: int, size: int, *, threads: int | None = None) -> Any:
    """The file's bytes, read into one new anonymous mapping without moving the descriptor's
    position: by several threads at once when it is big (each ``preadv`` into its own range).

    An anonymous mapping is zero-filled by the kernel as it is first touched, so no time goes
    into zeroing memory that the read overwrites at once (``bytearray(size)`` would touch every
    page twice); it supports ``find`` and slicing, so an ascii file needs no second copy. A
    file that shrinks while it is read gives a view of the bytes that were there.
    """
    if size == 0:
        return b""
    try:
        buffer = _anonymous_memory(size)
    except (OSError, MemoryError) as exc:
        if not refused_memory(exc):
            raise
        raise out_of_memory(f"reserving {size:,} bytes to read the file into", 0) from None
    view = memoryview(buffer)
    reached: list[tuple[int, int, int]] = []  # (start, end, where reading stopped)

    def read_range(start: int, end: int) -> None:
        done = start
        while done < end:
            count = _pread_into(fd, view[done:end], done)
            if not count:
                break
            done += count
        reached.append((start, end, done))

    run_split(size, resolve_threads(threads), read_range)
    view.release()
    for _, end, done in sorted(reached):
        if done < end:  # the file shrank while it was read: the bytes before the first gap
            return memoryview(buffer)[:done]
    return buffer


def _anonymous_memory(size: int) -> Any:
    """``size`` bytes of private memory that the kernel zero-fills as pages are first touched.

    Private, not shared (``mmap``'s default would make it shmem: slower faults, no huge pages);
    huge pages are asked for, as numpy does for big arrays. Where ``MAP_PRIVATE`` is missing
    (Windows) an uninitialised numpy array serves.
    """
    if not hasattr(_mmap, "MAP_PRIVATE"):
        return np.empty(size, dtype=np.uint8).data
    memory = _mmap.mmap(-1, size, flags=_mmap.MAP_PRIVATE)
    if size >= 1 << 22 and hasattr(_mmap, "MADV_HUGEPAGE"):
        memory.madvise(_mmap.MADV_HUGEPAGE)
    return memory


def prefault(mapped: _mmap.mmap, *, threads: int | None = None) -> None:
    """Fault every page of a mapping in, a range per thread, for callers that will touch it all.

    ``MADV_POPULATE_READ`` maps the pages without a fault per page (Linux 5.14 and later); where
    it is missing each page is read once instead. Copy-on-write pages stay shared with the
    page cache: nothing is copied.
    """
    size = len(mapped)
    if size == 0:
        return
    bytes_view = np.frombuffer(mapped, dtype=np.uint8)
    madvise = _madvise_function()
    address = bytes_view.__array_interface__["data"][0]

    def fault_range(start: int, end: int) -> None:
        if madvise is not None and madvise(address + start, end - start, _MADV_POPULATE_READ) == 0:
            return
        np.bitwise_or.reduce(bytes_view[start : end : _mmap.PAGESIZE])  # numpy releases the GIL

    run_split(size, resolve_threads(threads), fault_range)


def _madvise_function() -> Any:
    """libc's ``madvise`` through ctypes (which releases the GIL), or None."""
    import ctypes  # on first use: ``import streamser`` stays fast

    from .libc import libc_function

    signature = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc_function("madvise", signature, ctypes.c_int)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    chunk = os.pread(fd, len(view), offset)  # platforms without preadv (macOS before 11)
    view[: len(chunk)] = chunk
    return len(chunk)


@contextmanager
def parsing(buffer: Any) -> Iterator[None]:
    """Tell the kernel not to read ahead while the object graph of a mapped file is parsed.

    Parsing touches one small header in front of each storage, scattered through the file; with
    the default read-ahead every such fault also reads megabytes of tensor data nobody asked for
    (a cold open of 1 GiB of tensors: about 190 ms, against 5 ms without). Read-ahead comes back
    afterwards, for the tensors that are then read in full.
    """
    advise = getattr(buffer, "madvise", None)
    if advise is None or not hasattr(_mmap, "MADV_RANDOM"):
        yield
        return
    advise(_mmap.MADV_RANDOM)
    try:
        yield
    finally:
        advise(_mmap.MADV_NORMAL)


def buffer_of(
    source: Any, *, mmap: bool = True, threads: int | None = None, populate: bool = False
) -> tuple[Any, int, int]:
    """(buffer, start, origin) for bytes-like objects and file objects.

    Reading begins at ``buffer[start]``; ``origin`` is the file position of ``buffer[0]``
    (0 unless the rest of an unmappable stream was read from where it stood). ``threads`` and
    ``populate`` as for :func:`map_file`.
    """
    if isinstance(source, (bytes, bytearray, memoryview, _mmap.mmap)):
        return source, 0, 0
    mapped = map_file(source, mmap=mmap, threads=threads, populate=populate)
    if mapped is not None:
        return mapped, source.tell(), 0
    if isinstance(source, io.BytesIO):
        return source.getvalue(), source.tell(), 0
    origin = source.tell() if _seekable(source) else 0
    data = source.read()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("expected a binary file object (opened with 'rb')")
    return bytes(data), 0, origin


def _seekable(fileobj: Any) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, ValueError):
        return False
