"""Disk blocks claimed for a big payload just before it is written.

A buffered write into a part of a file that has no blocks yet takes the file system's delayed
allocation path. On ext4 (Linux 6.18) that path does its bookkeeping one 4 KiB block at a time:
a space reservation, a quota charge and a delayed extent for every block. The
``ext4:ext4_da_reserve_space`` tracepoint fires 65,537 times while streamser writes 256 MiB to
a new file, and never while ``ndarray.tofile`` writes the same bytes, because numpy claims the
blocks first (``posix_fallocate``). With the blocks claimed by one ``fallocate`` call, they
exist as one unwritten extent and the write only copies. A save to an open file went from
1.3-1.6x ``tofile``'s time to ``tofile``'s (see ``bench/``).

The claim uses ``FALLOC_FL_KEEP_SIZE``: the file never looks longer than what was written. If
a save fails half way, the blocks claimed past its end are the only trace; the kernel frees
them when the file is removed or truncated (an atomic save removes its temporary file).

Only plain files opened by Python are claimed for (``io.FileIO``, alone or under a buffer),
where ``tell()`` is the offset the next bytes land at. A wrapper that has a ``fileno()`` of its
own (gzip, a compressor) counts positions its own way, and appending files write at an end
that ``tell()`` does not know; those, pipes, sockets and systems without the call write as
they always did. So do files in memory (tmpfs), where a claim allocates and clears pages the
write then fills: 5% slower there. The first failed claim turns claiming off for that file.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable

CLAIM_FROM = 1 << 20  # payloads smaller than this are written without a claim
_FALLOC_FL_KEEP_SIZE = 1
_IN_MEMORY = {0x01021994, 0x858458F6}  # statfs f_type of tmpfs and ramfs


class BlockClaimer:
    """Claims disk blocks for the next ``nbytes`` written to one file (see the module)."""

    __slots__ = ("_fallocate", "_fd", "_on", "_tell")

    def __init__(
        self, fd: int, tell: Callable[[], int], fallocate: Callable[[int, int, int, int], int]
    ) -> None:
        self._fd = fd
        self._tell = tell
        self._fallocate = fallocate
        self._on = True

    def __call__(self, nbytes: int) -> None:
        if nbytes < CLAIM_FROM or not self._on:
            return
        try:
            failed = self._fallocate(self._fd, _FALLOC_FL_KEEP_SIZE, self._tell(), nbytes) != 0
        except (OSError, ValueError):
            failed = True
        if failed:  # unsupported, out of space...: the write itself will say what matters
            self._on = False


def python_file(fileobj: object) -> io.FileIO | None:
    """The ``io.FileIO`` of a file opened by Python, unbuffered or under a write buffer (where
    the file's descriptor may be used directly once the buffer is flushed); None otherwise."""
    raw = fileobj.raw if isinstance(fileobj, (io.BufferedWriter, io.BufferedRandom)) else fileobj
    return raw if isinstance(raw, io.FileIO) else None


def claimer_for(fileobj: object) -> BlockClaimer | None:
    """A :class:`BlockClaimer` for ``fileobj``, or None where claiming cannot help or is unsafe."""
    if not sys.platform.startswith("linux"):
        return None
    raw = python_file(fileobj)
    if raw is None or not isinstance(fileobj, io.IOBase):  # the second only tells the type
        return None
    try:
        fd = raw.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode) or _appends(fd) or _in_memory(fd):
            return None
    except (OSError, ValueError):
        return None
    fallocate = _load_fallocate()
    return None if fallocate is None else BlockClaimer(fd, fileobj.tell, fallocate)


def _appends(fd: int) -> bool:
    import fcntl

    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)


def _in_memory(fd: int) -> bool:
    """Is the file on tmpfs or ramfs? (False where the file system's type cannot be read.)"""
    from .libc import file_system_type

    return file_system_type(fd) in _IN_MEMORY


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    import ctypes  # on first use: ``import streamser`` stays fast

    from .libc import libc_function

    signature = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function = libc_function("fallocate64", signature, ctypes.c_int)  # 64-bit offsets (glibc)
    if function is None and sys.maxsize > 2**32:  # musl: fallocate's off_t is 64 bits
        function = libc_function("fallocate", signature, ctypes.c_int)
    return function
