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
bounded: a seek table's declared size is checked against ``max_size`` before anything is
allocated, and an undeclared stream is cut off at ``max_size``.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported on first use: ``import streamser`` stays fast
    from concurrent.futures import Future

    import zstandard

from ..errors import FormatError, LimitError, TruncatedError
from ..spec.limits import default_max_decompressed, out_of_memory, refused_memory
from .growing import GrowingBuffer, OutOfMemory, Overflow

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SEEK_TABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
FOOTER = struct.Struct("<IBI")  # number of frames, descriptor, seekable magic
ENTRY = struct.Struct("<II")  # compressed size, decompressed size
SKIPPABLE_HEADER = struct.Struct("<II")  # magic, frame size
DEFAULT_FRAME_SIZE = 4 << 20
MAX_FRAME_SIZE = 1 << 30  # the seekable format's limit on one frame's decompressed size


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


def decompress(buffer: Any, *, max_size: int | None = None) -> Any:
    """The whole decompressed stream, in one buffer (a mapping; ``b""`` when empty).

    ``max_size`` (by default :func:`~streamser.spec.limits.default_max_decompressed`) bounds
    the result. A seek table's declared total is checked against it before anything is
    allocated; without one, output stops at ``max_size``. Frames are decompressed straight into
    a buffer that grows in place (:mod:`.growing`), so memory in use is the decompressed bytes
    plus 64 KiB, never twice them. Each frame's extent is found from its block headers first,
    so a truncated frame is an error, not a short result. Skippable frames are stepped over.
    """
    limit = default_max_decompressed() if max_size is None else max_size
    view = memoryview(buffer).cast("B")
    entries = read_seek_table(view)
    if entries is not None:
        declared = sum(d for _, d in entries)
        if declared > limit:
            raise _too_big(declared, limit)
        if any(d > MAX_FRAME_SIZE for _, d in entries):
            raise FormatError(f"seek table claims a frame over {MAX_FRAME_SIZE:,} bytes", 0)
    ceiling = limit if entries is None else declared
    # The first reservation follows the input, not a claim; growing costs no copies.
    try:
        out = GrowingBuffer(max(1 << 16, 4 * view.nbytes), ceiling)
    except OutOfMemory:
        raise out_of_memory("reserving memory to decompress into", 0) from None
    if entries is None:
        _plain_frames(view, out, limit)
    else:
        _seekable_frames(view, entries, out)
    try:
        return out.result()
    except (OutOfMemory, MemoryError, OSError) as exc:  # where the mapping cannot shrink in place
        if not isinstance(exc, OutOfMemory) and not refused_memory(exc):
            raise
        raise _no_memory(out, 0) from None  # every frame was read: no one frame to blame


def _no_memory(out: GrowingBuffer, at: int) -> LimitError:
    """The error for a buffer that could not grow while the frame at byte ``at`` was read."""
    return out_of_memory(f"decompressing (after {out.size:,} bytes)", at)


def _plain_frames(view: memoryview, out: GrowingBuffer, limit: int) -> None:
    """Every frame of a zstd stream without a seek table, up to ``limit`` bytes in all."""
    pos = 0
    while pos < view.nbytes:
        if _is_skippable(view, pos):
            pos = _skip_skippable(view, pos)
            continue
        end = _frame_end(view, pos)
        try:
            _decompress_frame(view, pos, end, out, limit - out.size)
        except Overflow:
            raise _too_big(out.size + 1, limit) from None
        except (OutOfMemory, MemoryError):
            raise _no_memory(out, pos) from None
        pos = end


def _seekable_frames(view: memoryview, entries: list[tuple[int, int]], out: GrowingBuffer) -> None:
    """The frames a seek table lists, each checked against its entry."""
    pos = 0
    for packed, size in entries:
        if not _is_zstd_frame(view, pos) or _frame_end(view, pos) != pos + packed:
            raise FormatError("the zstd frames do not match the seek table", pos)
        try:
            got = _decompress_frame(view, pos, pos + packed, out, size)
        except Overflow:
            raise FormatError(
                f"zstd frame holds more than the seek table's {size:,} bytes", pos
            ) from None
        except (OutOfMemory, MemoryError):
            raise _no_memory(out, pos) from None
        if got != size:
            raise FormatError(f"zstd frame holds {got:,} bytes, the seek table {size:,}", pos)
        pos += packed


def _decompress_frame(view: memoryview, pos: int, end: int, out: GrowingBuffer, most: int) -> int:
    """Decompress the frame at ``view[pos:end]`` into ``out``; the bytes it held."""
    import zstandard

    reader = _decompressor().stream_reader(view[pos:end], read_across_frames=False)
    try:
        with reader:
            return out.fill(reader.readinto, most)
    except zstandard.ZstdError as exc:
        raise zstd_error(exc, pos) from None


def zstd_error(exc: Exception, at: int) -> FormatError:
    """zstandard's error for the frame at byte ``at``: out of memory (zstd could not allocate
    its window or context) is a LimitError saying so; anything else is damage."""
    if "allocation error" in str(exc).lower() or "memory_allocation" in str(exc).lower():
        return out_of_memory("decompressing a zstd frame", at)
    return FormatError(f"damaged zstd frame: {exc}", at)


_contexts: dict[int, zstandard.ZstdDecompressor] = {}  # by thread id


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompression context (making one costs more than a small frame)."""
    import threading

    import zstandard

    ident = threading.get_ident()
    found = _contexts.get(ident)
    if found is None:
        if len(_contexts) > 64:  # threads come and go: forget the old ones
            _contexts.clear()
        found = _contexts[ident] = zstandard.ZstdDecompressor()
    return found


def _is_zstd_frame(view: memoryview, pos: int) -> bool:
    return bytes(view[pos : pos + 4]) == ZSTD_MAGIC


_DICT_ID_BYTES = (0, 1, 2, 4)
_CONTENT_SIZE_BYTES = (0, 2, 4, 8)  # flag 0 with the single-segment bit set: 1 byte
_RLE_BLOCK, _RESERVED_BLOCK = 1, 3


def _frame_end(view: memoryview, pos: int) -> int:
    """Where the zstd frame at ``pos`` ends, from its header and block headers (RFC 8878),
    without decompressing it: a frame cut short is a :class:`TruncatedError` here."""
    if not _is_zstd_frame(view, pos):
        raise FormatError("expected a zstd frame", pos)
    if view.nbytes - pos < 5:
        raise TruncatedError("input ends inside a zstd frame header", pos)
    descriptor = view[pos + 4]
    single_segment = descriptor >> 5 & 1
    end = pos + 5 + (1 - single_segment) + _DICT_ID_BYTES[descriptor & 3]
    end += _CONTENT_SIZE_BYTES[descriptor >> 6] or single_segment
    last = False
    while not last:
        if end + 3 > view.nbytes:
            raise TruncatedError("input ends inside a zstd frame", pos)
        header = view[end] | view[end + 1] << 8 | view[end + 2] << 16
        kind = header >> 1 & 3
        if kind == _RESERVED_BLOCK:
            raise FormatError("zstd block of the reserved type", end)
        last = bool(header & 1)
        end += 3 + (1 if kind == _RLE_BLOCK else header >> 3)
    end += 4 if descriptor & 4 else 0  # the content checksum
    if end > view.nbytes:
        raise TruncatedError("input ends inside a zstd frame", pos)
    return end


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


def _too_big(size: int, ceiling: int) -> LimitError:
    return LimitError(
        f"compressed input expands to more than max_decompressed={ceiling:,} bytes (at least "
        f"{size:,}); pass a larger max_decompressed= if that is expected",
        0,
    )
