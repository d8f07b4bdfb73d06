"""The keeper: the parent maps every file a phase reads and touches it before each run.

First it puts each file in the page cache the same way: written back, evicted
(``POSIX_FADV_DONTNEED``) and read back sequentially, as a file read from disk is. How a file
was written decides the size of its page cache folios, and that its read speed: a 256 MiB file
written 4 KiB at a time reads in 80 ms with ``np.fromfile``, the same file read back from disk
in 59 ms. Without this, a load's ratio to ``np.fromfile`` of the raw file depends on how its
library happened to write its file, and on how fragmented memory was at that moment (before,
streamser's eager load moved between 1.04x and 1.29x of ``np.fromfile`` from run to run).

Page cache that no process maps is paged out here once idle (DAMON's reclaim scheme skips
mapped pages), and a page the host took back is several times slower to read. The keeper holds
a read-only mapping of each input file in the parent process, so the files stay in the page
cache for the whole phase, and reads one byte of every page of the file a run is about to read
just before the run starts (about 2 ms per 512 MiB when warm). It touches only between runs,
never during one, so it takes no CPU from a timed window; and being in the parent, its mapped
pages never count in the worker's RSS.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from .warm import touch


class Keeper:
    """Read-only mappings of files (or of every file in a folder), touched on demand."""

    def __init__(self) -> None:
        self._maps: dict[Path, list[tuple[mmap.mmap, np.ndarray[Any, Any]]]] = {}

    def keep(self, path: Path) -> None:
        """Read ``path`` (a file, or each file in a folder) into the page cache afresh and map
        it until ``release``."""
        if path in self._maps or not path.exists():
            return
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        for file in files:
            recache(file)
        self._maps[path] = [mapped for file in files if (mapped := _map(file)) is not None]
        self.touch(path)

    def touch(self, path: Path) -> None:
        """Read one byte of every page of ``path``'s mappings."""
        for _, view in self._maps.get(path, ()):
            touch(view)

    def release(self) -> None:
        """Unmap everything (before the files are deleted)."""
        handles = [handle for maps in self._maps.values() for handle, _ in maps]
        self._maps.clear()  # drops the numpy views, which hold the mappings' buffers
        for handle in handles:
            handle.close()

    def __enter__(self) -> Keeper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def recache(file: Path, chunk: int = 8 << 20) -> None:
    """Write ``file`` back, drop it from the page cache, and read it back in sequentially."""
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        buffer = bytearray(chunk)
        while os.readv(fd, [buffer]):
            pass
    finally:
        os.close(fd)


def _map(file: Path) -> tuple[mmap.mmap, np.ndarray[Any, Any]] | None:
    with open(file, "rb") as handle:
        size = handle.seek(0, 2)
        if not size:
            return None
        mapped = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
    return mapped, np.frombuffer(mapped, np.uint8)
