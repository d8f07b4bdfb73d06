"""A bounded output buffer: small writes are gathered, big payloads pass straight through.

Records of the object stream are tiny (a 4-byte tag, a short class name) and would cost one
system call each; storages can be gigabytes and must never be copied whole. The sink gathers
small writes up to ``target`` bytes and hands large ones to the target as the memoryviews they
are, so memory stays bounded by ``target`` whatever the size of the output.

Encoders append their records to :attr:`Sink.buffer` directly (a method call per 4-byte int
would cost more than the int), and whoever drives them calls :meth:`Sink.settle` once per
value, which drains the buffer when it has reached ``target``. Between two settles the buffer
grows by one value's records at most; large payloads never enter it.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable
from typing import Any, Protocol

from .preallocate import python_file

DEFAULT_TARGET = 1 << 20  # bytes gathered before a write to the target
DIRECT_THRESHOLD = 1 << 16  # payloads at least this large bypass the buffer
# Bytes per write() call to a file. Measured with `python -m bench --cases checkpoint --size 2G`
# (contenders alternating, 2-core VM, Linux 6.18, ext4, blocks claimed before each payload),
# best of 9 against `tofile`'s 306 ms: pieces of 8 MiB 343 ms, 64 MiB 318 ms, whole payloads
# 318 ms. A bound all the same, so that one call's uninterruptible copy stays short.
WRITE_PIECE = 64 << 20


class Sink:
    """Buffers small writes for ``write`` (a function taking bytes-like objects).

    ``copy_target`` is the file itself when bytes may also be put there behind ``write``'s back
    (a plain file on a file server, see :func:`kernel_copy_target`), which enables
    :meth:`copy_from_file`. ``claim``, when given, is told the size of every large payload
    just before it is written, so the file's blocks can be claimed at once (see
    :mod:`streamser.io.preallocate`).
    """

    __slots__ = ("_claim", "_copy_target", "_drained", "_target", "_write", "buffer")

    def __init__(
        self,
        write: Callable[[Any], object],
        target: int = DEFAULT_TARGET,
        copy_target: io.IOBase | None = None,
        claim: Callable[[int], None] | None = None,
    ) -> None:
        self._write = write
        self._target = target
        self._copy_target = copy_target
        self._claim = claim
        self.buffer = bytearray()  # appended to by encoders; the same object for the sink's life
        self._drained = 0  # bytes handed to the target so far

    @property
    def target(self) -> int:
        """Bytes gathered before the buffer is drained (the compiled writer is told)."""
        return self._target

    @property
    def written(self) -> int:
        """Bytes accepted so far, buffered or not."""
        return self._drained + len(self.buffer)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += data
        if len(self.buffer) >= self._target:
            self.drain()

    def settle(self) -> None:
        """Drain the buffer if it has reached its target size."""
        if len(self.buffer) >= self._target:
            self.drain()

    def write_large(self, data: memoryview, claimed: bool = False) -> None:
        """Write a payload without copying it into the buffer when it is large. ``claimed``:
        its blocks were claimed already, with the payload it continues (see :meth:`claim`)."""
        if data.nbytes < DIRECT_THRESHOLD:
            self.buffer += data
            return
        self.drain()
        if self._claim is not None and not claimed:
            self._claim(data.nbytes)
        self._write(data)
        self._drained += data.nbytes

    def claim(self, nbytes: int) -> None:
        """Claim the blocks of the next ``nbytes`` at once, for a payload that will arrive in
        several ``write_large(..., claimed=True)`` calls."""
        self.drain()
        if self._claim is not None:
            self._claim(nbytes)

    @property
    def copies_files(self) -> bool:
        """Can :meth:`copy_from_file` copy at all (a plain file on a file server)?"""
        return self._copy_target is not None and hasattr(os, "copy_file_range")

    def copy_from_file(
        self, path: str, offset: int, count: int, identity: tuple[int, int] | None
    ) -> int:
        """Copy ``count`` bytes of the file at ``path`` from ``offset`` inside the kernel, if
        ``path`` still names the file ``identity`` (device, inode) describes.

        Returns how many bytes were copied (0 where the platform, the file systems or the
        target do not allow it, or the name now holds another file); the caller writes the
        rest itself. A buffered file is flushed first and told its new position after, so its
        ``tell()`` stays true.
        """
        target = self._copy_target
        if target is None or identity is None or not self.copies_files:
            return 0
        self.drain()
        target.flush()
        try:  # never blocks on a FIFO that took the name; only regular files are copied
            source = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return 0
        copied = 0
        try:
            status = os.fstat(source)
            if not stat.S_ISREG(status.st_mode) or (status.st_dev, status.st_ino) != identity:
                return 0
            if self._claim is not None:
                self._claim(count)
            start, fd = target.tell(), target.fileno()
            try:
                while copied < count:
                    step = os.copy_file_range(
                        source, fd, count - copied, offset + copied, start + copied
                    )
                    if step <= 0:
                        break
                    copied += step
            except OSError:
                pass  # e.g. EXDEV, or EBADF for a file opened to append: the caller writes on
            finally:
                if copied:
                    target.seek(start + copied)  # the copy wrote at explicit offsets
        finally:
            os.close(source)
        self._drained += copied
        return copied

    def drain(self) -> None:
        buffer = self.buffer
        if buffer:
            self._write(bytes(buffer))  # a copy, so the target may keep it: the buffer is reused
            self._drained += len(buffer)
            buffer.clear()


class WriteTarget(Protocol):
    """Anything with a ``write`` method that takes bytes-like objects (files, collectors)."""

    def write(self, data: Any, /) -> Any: ...


# statfs f_type of the file systems whose copy_file_range has the server copy the bytes (NFS
# 4.2, SMB): the data never crosses the network. On local file systems the kernel copies through
# a pipe, slower than writing from a mapping (see streamser.io.windows): there it is not used.
SERVER_COPY_TYPES = frozenset({0x6969, 0xFF534D42, 0xFE534D42})  # NFS, CIFS, SMB2


def copies_on_server(fd: int) -> bool:
    """Is ``fd`` on a network file system whose server performs ``copy_file_range``?"""
    from .libc import file_system_type

    return file_system_type(fd) in SERVER_COPY_TYPES


def kernel_copy_target(fileobj: Any) -> io.IOBase | None:
    """``fileobj`` when bytes of another file are best copied into it by its file server: a
    plain file opened by Python on NFS or SMB, unbuffered or under a buffer (flushed before and
    repositioned after each copy). None for anything else (local files, memory, compressors,
    sockets, files opened to append)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "copy_file_range"):
        return None  # the file-system test below reads Linux's statfs
    raw = python_file(fileobj)
    if raw is None or not isinstance(fileobj, io.IOBase):  # the second only tells the type
        return None
    try:
        if not fileobj.seekable() or "a" in raw.mode or not copies_on_server(raw.fileno()):
            return None
    except (OSError, ValueError):
        return None
    return fileobj


def writer_for(fileobj: WriteTarget) -> Callable[[Any], object]:
    """A write function for ``fileobj`` that never leaves a partial write behind, and hands a
    file big payloads in pieces of :data:`WRITE_PIECE` bytes.

    Unbuffered (raw) files may accept fewer bytes than offered; buffered ones never do.
    """
    if isinstance(fileobj, io.RawIOBase):

        def write_all(data: Any) -> None:
            view = memoryview(data).cast("B")
            while view.nbytes:
                count = fileobj.write(view[:WRITE_PIECE])
                if count is None:
                    raise BlockingIOError("non-blocking file would block during a save")
                view = view[count:]

        return write_all
    if isinstance(fileobj, io.BufferedIOBase) and not isinstance(fileobj, io.BytesIO):
        write = fileobj.write

        def write_pieces(data: Any) -> None:
            view = memoryview(data).cast("B")
            for start in range(0, view.nbytes, WRITE_PIECE):
                write(view[start : start + WRITE_PIECE])

        return write_pieces
    return fileobj.write
