"""Write-behind for atomic saves: start the disk writes while the file is still being written.

``save`` must fsync its temporary file before the rename, and an fsync at the end waits for
every byte at once: the write and the disk take turns. Telling the kernel every 32 MiB to start
writing back what has arrived so far (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which
does not wait) lets the disk work while Python produces the rest, so the final fsync finds
little left to do. Measured here on 1 GiB: write + fsync 0.67-0.88 s, with write-behind
0.44-0.50 s. Where the call does not exist this is a plain unbuffered file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

STEP = 32 << 20  # bytes written between two write-back requests
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    import ctypes  # on first use: ``import streamser`` stays fast

    from .libc import libc_function

    signature = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return libc_function("sync_file_range", signature, ctypes.c_int)


def _sync_on_first_use(fd: int, start: int, count: int, flags: int) -> int:
    """The C call, found the first time write-back is asked for (-1 where there is none)."""
    function = _load_sync_file_range()
    return -1 if function is None else function(fd, start, count, flags)


_sync_file_range: Callable[[int, int, int, int], int] | None = _sync_on_first_use


class WriteBehindFile(io.FileIO):
    """An unbuffered file that asks the kernel to write back every ``STEP`` bytes written.

    ``name`` is the file its errors speak of (a temporary file's errors name the file it
    will replace: "No space left on device: 'model.t7'").
    """

    def __init__(self, fd: int, mode: str = "wb", *, name: str | None = None) -> None:
        super().__init__(fd, mode)
        self._requested = 0  # bytes already handed to write-back
        self._error_name = name

    def write(self, data: ReadableBuffer, /) -> int:
        try:
            count = super().write(data)
        except OSError as exc:
            if self._error_name is None or exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, self._error_name) from exc
        if count and _sync_file_range is not None:
            # The position, not a count of this method's bytes: a kernel copy into the file
            # (copy_file_range, for np.memmap inputs) adds bytes that never pass through here.
            end = os.lseek(self.fileno(), 0, os.SEEK_CUR)
            if end - self._requested >= STEP:
                _sync_file_range(
                    self.fileno(), self._requested, end - self._requested, _SYNC_FILE_RANGE_WRITE
                )  # a failure only loses the head start: fsync still makes it durable
                self._requested = end
        return count
