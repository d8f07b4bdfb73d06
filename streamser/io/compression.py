"""zstd around the ``.t7`` byte stream, in the zstd *seekable format*.

A ``.t7`` file has no header, so compression is a container around the exact bytes of the
uncompressed format, never a change to it: ``zstd -d model.t7.zst`` gives the plain file back.

Layout (facebook/zstd ``contrib/seekable_format``): the stream is cut into frames of a fixed
uncompressed size (4 MiB by default), each compressed independently (with its content checksum),
followed by one skippable frame holding the seek table::

    frame 0 | frame 1 | ... | 0x184D2A5E  size  entries  footer
    entry  = compressed size (u32), decompressed size (u32)         (little endian)
    footer = number of frames (u32), descriptor (u8, bit 7 = checksum flag: 0 here),
             0x8F92EAB1

Frames hold at most ``frame_size`` bytes, and a big payload (half a frame or more: a storage's
elements, arriving from the writer's sink in one piece) starts and ends on frame boundaries. So
the records between storages sit in small frames of their own, and a lazy reader can parse the
object graph, or read a tensor's rows, without decompressing frames it does not need. The seek
table records each frame's size, so frames of several sizes are within the format.

Readers recognise zstd input by its magic number whatever the file is called. Decompression is
bounded: the declared size (seek table or frame header) is checked against ``max_size`` before
anything is allocated, and an undeclared stream is cut off at ``max_size``.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported on first use: ``import streamser`` stays fast
    from concurrent.futures import Future

    import zstandard

from ..errors import FormatError, LimitError, TruncatedError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SEEK_TABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
FOOTER = struct.Struct("<IBI")  # number of frames, descriptor, seekable magic
ENTRY = struct.Struct("<II")  # compressed size, decompressed size
SKIPPABLE_HEADER = struct.Struct("<II")  # magic, frame size
DEFAULT_FRAME_SIZE = 4 << 20
MAX_FRAME_SIZE = 1 << 30  # the seekable format's limit on one frame's decompressed size
DEFAULT_MAX_SIZE = 64 << 30  # bytes a compressed input may expand to unless told otherwise


def is_zstd(buffer: Any, start: int = 0) -> bool:
    return bytes(buffer[start : start + 4]) == ZSTD_MAGIC


class SeekableZstdWriter:
    """A write target that compresses what it is given into seekable zstd frames.

    ``threads`` frames are compressed at once (zstd releases the GIL); at most twice that many
    are in flight, so memory stays near ``2 * threads * frame_size`` whatever the total size.
    Call :meth:`close` to flush the last frame and write the seek table.
    """

    def __init__(
        self,
        write: Callable[[Any], object],
        *,
        level: int = 3,
        frame_size: int = DEFAULT_FRAME_SIZE,
        threads: int = 1,
    ) -> None:
        if not 0 < frame_size <= MAX_FRAME_SIZE:
            raise ValueError(f"frame_size must be between 1 and {MAX_FRAME_SIZE}")
        self._write = write
        self._level = level
        self._frame_size = frame_size
        self._frame = bytearray()
        self._entries: list[tuple[int, int]] = []
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self._local = threading.local()
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self._pending: deque[Future[tuple[bytes, int]]] = deque()
        self._max_pending = 2 * threads

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        aligned = view.nbytes >= self._frame_size // 2
        if aligned and self._frame:
            self._submit()  # a big payload (a storage) starts a frame of its own...
        self._append(view)
        if aligned and self._frame:
            self._submit()  # ...and ends one, so that the records after it start another

    def _append(self, view: memoryview) -> None:
        while view.nbytes:
            room = self._frame_size - len(self._frame)
            self._frame += view[:room]
            view = view[room:]
            if len(self._frame) == self._frame_size:
                self._submit()

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            import zstandard

            compressor = zstandard.ZstdCompressor(level=self._level, write_checksum=True)
            self._local.compressor = compressor
        return compressor

    def _compress(self, frame: bytearray) -> tuple[bytes, int]:
        return self._compressor().compress(frame), len(frame)

    def _submit(self) -> None:
        frame, self._frame = self._frame, bytearray()  # handed over whole, not copied
        if self._pool is None:
            self._emit(self._compress(frame))
            return
        self._pending.append(self._pool.submit(self._compress, frame))
        while len(self._pending) >= self._max_pending:
            self._emit(self._pending.popleft().result())

    def _emit(self, result: tuple[bytes, int]) -> None:
        compressed, size = result
        self._write(compressed)
        self._entries.append((len(compressed), size))

    def close(self) -> None:
        """Compress what is left and write the seek table."""
        if self._frame:
            self._submit()
        while self._pending:
            self._emit(self._pending.popleft().result())
        if self._pool is not None:
            self._pool.shutdown()
        self._write(seek_table(self._entries))

    def abort(self) -> None:
        """Stop without writing anything more (the save failed)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def seek_table(entries: list[tuple[int, int]]) -> bytes:
    """The skippable frame that ends a seekable stream, for frames of the given sizes."""
    body = b"".join(ENTRY.pack(c, d) for c, d in entries)
    body += FOOTER.pack(len(entries), 0, SEEKABLE_MAGIC)
    return SKIPPABLE_HEADER.pack(SEEK_TABLE_MAGIC, len(body)) + body


def read_seek_table(buffer: Any) -> list[tuple[int, int]] | None:
    """The (compressed, decompressed) size of every frame, or None without a valid seek table."""
    size = len(buffer)
    if size < SKIPPABLE_HEADER.size + FOOTER.size:
        return None
    count, descriptor, magic = FOOTER.unpack_from(buffer, size - FOOTER.size)
    if magic != SEEKABLE_MAGIC:
        return None
    if descriptor & 0x7C:
        raise FormatError("seek table uses reserved bits of its descriptor", size - 5)
    entry_size = ENTRY.size + (4 if descriptor & 0x80 else 0)
    table_size = SKIPPABLE_HEADER.size + count * entry_size + FOOTER.size
    if table_size > size:
        raise TruncatedError(f"seek table claims {count} frames; the input is too short", 0)
    start = size - table_size
    frame_magic, frame_size = SKIPPABLE_HEADER.unpack_from(buffer, start)
    if frame_magic != SEEK_TABLE_MAGIC or frame_size != table_size - SKIPPABLE_HEADER.size:
        raise FormatError("seek table frame header does not match its footer", start)
    entries = [
        ENTRY.unpack_from(buffer, start + SKIPPABLE_HEADER.size + i * entry_size)
        for i in range(count)
    ]
    if sum(c for c, _ in entries) != start:
        raise FormatError("seek table frame sizes do not add up to the file's size", start)
    return entries


def decompress(buffer: Any, *, max_size: int = DEFAULT_MAX_SIZE) -> memoryview:
    """The whole decompressed stream, in one buffer.

    With a seek table the total size is known and checked against ``max_size`` before anything
    is allocated; a plain zstd stream grows its buffer up to ``max_size`` and no further (a
    zstd bomb stops there). Skippable frames are stepped over.
    """
    entries = read_seek_table(buffer)
    declared = sum(d for _, d in entries) if entries is not None else None
    if declared is not None and declared > max_size:
        raise _too_big(declared, max_size)
    if entries is not None and any(d > MAX_FRAME_SIZE for _, d in entries):
        raise FormatError(f"seek table claims a frame over {MAX_FRAME_SIZE:,} bytes", 0)
    # Memory follows the data that actually arrives, from a start in proportion to the input:
    # neither junk that starts like zstd nor a seek table's claims can cost a big allocation.
    ceiling = max_size if declared is None else declared
    out = _Output(min(ceiling, max(1 << 16, 4 * len(buffer))), ceiling, max_size)
    view = memoryview(buffer).cast("B")
    pos = 0
    while pos < view.nbytes:
        pos = _skip_skippable(view, pos) if _is_skippable(view, pos) else _frame(view, pos, out)
    if declared is not None and out.size != declared:
        raise FormatError(f"zstd frames hold {out.size:,} bytes, the seek table {declared:,}", 0)
    return out.view()


def _is_skippable(view: memoryview, pos: int) -> bool:
    if view.nbytes - pos < 8:
        return False
    magic: int = SKIPPABLE_HEADER.unpack_from(view, pos)[0]
    return magic & 0xFFFFFFF0 == 0x184D2A50


def _skip_skippable(view: memoryview, pos: int) -> int:
    size: int = SKIPPABLE_HEADER.unpack_from(view, pos)[1]
    end = pos + SKIPPABLE_HEADER.size + size
    if end > view.nbytes:
        raise TruncatedError("input ends inside a skippable zstd frame", pos)
    return end


def _frame(view: memoryview, pos: int, out: _Output) -> int:
    """Decompress the zstd frame at ``pos`` into ``out``; returns where the next frame starts."""
    if bytes(view[pos : pos + 4]) != ZSTD_MAGIC:
        raise FormatError("expected a zstd frame", pos)
    import zstandard

    decompressor = zstandard.ZstdDecompressor().decompressobj()
    fed = pos
    try:
        while not decompressor.eof:
            if fed >= view.nbytes:
                raise TruncatedError("input ends inside a zstd frame", pos)
            chunk = view[fed : fed + out.safe_input()]
            fed += chunk.nbytes
            out.append(decompressor.decompress(chunk))
    except zstandard.ZstdError as exc:
        raise FormatError(f"damaged zstd frame: {exc}", pos) from None
    return fed - len(decompressor.unused_data)


_MAX_RATIO = 1 << 15  # a zstd block yields at most 128 KiB from at least 4 bytes of input


class _Output:
    """A growing output buffer that never grows past ``ceiling`` bytes.

    ``ceiling`` is what the seek table declares, or ``max_size`` without one; input is fed in
    pieces small enough that even a zstd bomb cannot overshoot the ceiling by much in one call.
    """

    def __init__(self, capacity: int, ceiling: int, max_size: int) -> None:
        self._array = np.empty(capacity, dtype=np.uint8)
        self._ceiling = ceiling
        self._max_size = max_size
        self.size = 0

    def safe_input(self) -> int:
        """How many compressed bytes may be decompressed in one call."""
        return max(1 << 10, min(1 << 20, (self._ceiling - self.size) // _MAX_RATIO))

    def append(self, data: bytes) -> None:
        end = self.size + len(data)
        if end > self._array.size:
            if end > self._ceiling:
                if self._ceiling < self._max_size:
                    raise FormatError("zstd frames hold more than the seek table declares", 0)
                raise _too_big(end, self._ceiling)
            try:
                grown = np.empty(min(self._ceiling, max(end, 2 * self._array.size)), np.uint8)
            except MemoryError:
                raise _too_big(end, self._max_size) from None
            grown[: self.size] = self._array[: self.size]
            self._array = grown
        self._array[self.size : end] = np.frombuffer(data, dtype=np.uint8)
        self.size = end

    def view(self) -> memoryview:
        return memoryview(self._array.data)[: self.size]


def _too_big(size: int, ceiling: int) -> LimitError:
    return LimitError(
        f"compressed input expands to more than max_decompressed={ceiling:,} bytes (at least "
        f"{size:,}); pass a larger max_decompressed= if that is expected",
        0,
    )
