"""Where input bytes come from: a private mapping of a file, its whole contents, or a stream.

A reader works over one buffer: a private copy-on-write mapping of a regular file (tensor data
is then read only when touched), the bytes of anything else.
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


def map_file(fileobj: Any, *, mmap: bool) -> Any | None:
    """A private copy-on-write mapping of a regular file (views never change the file), or
    the file's whole contents when ``mmap`` is False; None when the object has no usable
    file descriptor."""
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
        return read_whole(fd, info.st_size)
    return _mmap.mmap(fd, 0, access=_mmap.ACCESS_COPY)


def read_whole(fd: int, size: int) -> memoryview:
    """The file's bytes, read into one new buffer without moving the descriptor's position.

    The buffer is an uninitialised numpy array, so no time is spent zeroing memory that the
    read overwrites at once (``bytearray(size)`` would touch every page twice).
    """
    view = memoryview(np.empty(size, dtype=np.uint8).data)
    done = 0
    while done < size:
        count = _pread_into(fd, view[done:], done)
        if not count:
            break
        done += count
    return view[:done]


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


def buffer_of(source: Any, *, mmap: bool = True) -> tuple[Any, int, int]:
    """(buffer, start, origin) for bytes-like objects and file objects.

    Reading begins at ``buffer[start]``; ``origin`` is the file position of ``buffer[0]``
    (0 unless the rest of an unmappable stream was read from where it stood).
    """
    if isinstance(source, (bytes, bytearray, memoryview, _mmap.mmap)):
        return source, 0, 0
    mapped = map_file(source, mmap=mmap)
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
