"""Random access to a seekable zstd stream: any byte range, decompressing only its frames.

The seek table gives every frame's compressed and decompressed size, so the frame holding a
byte of the plain stream is found by bisection and decompressed alone. Two readers build on it:

* :class:`FrameSource` reads byte ranges, keeping a few recently used frames in a cache of
  bounded size (``cache_bytes``), and fills big ranges straight into the caller's array without
  caching them, so reading a 16 MiB tensor costs about one decompression of its frames.
* :class:`FrameDecoder` is the binary decoder for parsing the object graph lazily, over any
  :class:`~streamser.io.ranged.ByteSource`: a :class:`FrameSource`, or the plain bytes of a file
  object or URL (:class:`~streamser.io.ranged.RangedSource`). It sees the whole plain stream
  through a *sparse* anonymous mapping, fills in only the windows that records are read from
  (whole frames here, read-ahead windows there: the source decides), and gives those pages back
  to the system once parsing has moved on. Storage elements are never read while parsing:
  ``read_array`` returns a :class:`~streamser.values.lazy.LazyStorage` that knows where they are.

The compressed frames themselves come from a mapping of the file or, for a file object or URL,
from a :class:`~streamser.io.ranged.RangedSource`: then only the frames a read needs are
fetched, a run of them in one parallel request.

Every frame is checked as it is decompressed: its header's content size against the seek
table's, its length against the table's, and its content checksum by zstd itself. A damaged
frame raises :class:`~streamser.errors.FormatError` at the frame's compressed offset.
"""

from __future__ import annotations

import bisect
import mmap
import threading
from collections import OrderedDict
from itertools import accumulate
from typing import Any

import zstandard

from ..codecs.binary import BinaryDecoder
from ..errors import FormatError, TruncatedError
from ..spec.format import ElementType
from ..spec.limits import out_of_memory
from .compression import (
    ENTRY,
    FOOTER,
    MAX_FRAME_SIZE,
    SEEKABLE_MAGIC,
    SKIPPABLE_HEADER,
    ZSTD_MAGIC,
    _too_big,
    read_seek_table,
    zstd_error,
)
from .ranged import BufferSource, ByteSource, RangedSource

DEFAULT_CACHE_BYTES = 32 << 20  # decompressed frames kept for small reads
_GROUP_BYTES = 64 << 20  # compressed bytes of whole frames fetched at once by a big read
_UNKNOWN_SIZE = zstandard.CONTENTSIZE_UNKNOWN
_PAGE = mmap.PAGESIZE
_MAP_NORESERVE = 0x4000  # Linux: reserve no swap for the sparse mapping (it is mostly untouched)


class FrameSource:
    """The plain bytes of a seekable zstd stream, read by range.

    ``buffer`` is the compressed input: a buffer (a mapping of the file, usually) or a source
    with ``bytes_at(start, end)`` (a :class:`~streamser.io.ranged.RangedSource`). ``entries``
    are its seek table's (compressed, decompressed) sizes; ``max_size`` bounds their total.
    Reads may come from several threads at once (Dask workers do that).
    """

    def __init__(
        self,
        buffer: Any,
        entries: list[tuple[int, int]],
        *,
        max_size: int,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if any(d > MAX_FRAME_SIZE for _, d in entries):
            raise FormatError(f"seek table claims a frame over {MAX_FRAME_SIZE:,} bytes", 0)
        self._compressed = buffer if hasattr(buffer, "bytes_at") else BufferSource(buffer)
        self._entries = entries
        self._max_size = max_size
        self._packed = [0, *accumulate(c for c, _ in entries)]  # where each frame starts
        self._starts = [0, *accumulate(d for _, d in entries)]  # ...and its plain bytes start
        self.size = self._starts[-1]
        if self.size > max_size:
            raise _too_big(self.size, max_size)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._local = threading.local()  # a decompressor per thread: they are not thread-safe
        self.frames_decompressed = 0  # for tests and benchmarks: work actually done

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as the compressed input and the seek table, without cached frames."""
        options = {"max_size": self._max_size, "cache_bytes": self._cache_bytes}
        return (_frame_source, (self._compressed, self._entries, options))

    @property
    def frame_count(self) -> int:
        return len(self._starts) - 1

    def frame_of(self, pos: int) -> int:
        """The frame holding plain byte ``pos`` (0 <= pos < size)."""
        return bisect.bisect_right(self._starts, pos) - 1

    def frame_span(self, index: int) -> tuple[int, int]:
        """Plain (start, end) of frame ``index``."""
        return self._starts[index], self._starts[index + 1]

    def decompress(self, index: int, frame: Any = None) -> bytes:
        """Frame ``index`` decompressed and checked (not cached); ``frame`` holds its
        compressed bytes when the caller has fetched them already."""
        start, end = self._packed[index], self._packed[index + 1]
        expected = self._starts[index + 1] - self._starts[index]
        if frame is None:
            frame = self._compressed.bytes_at(start, end)
        if bytes(frame[:4]) != ZSTD_MAGIC:
            raise FormatError("expected a zstd frame where the seek table puts one", start)
        try:
            declared = zstandard.get_frame_parameters(frame).content_size
            if declared not in (_UNKNOWN_SIZE, expected):
                raise FormatError(
                    f"zstd frame declares {declared:,} bytes, the seek table {expected:,}", start
                )
            data: bytes = self._decompressor().decompress(
                frame, max_output_size=expected, allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            raise zstd_error(exc, start) from None
        except MemoryError:
            raise out_of_memory("decompressing a frame", start) from None
        if len(data) != expected:
            raise FormatError(
                f"zstd frame holds {len(data):,} bytes, the seek table {expected:,}", start
            )
        with self._lock:
            self.frames_decompressed += 1
        return data

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        return decompressor

    def frame(self, index: int, compressed: Any = None) -> bytes:
        """Frame ``index`` through the cache."""
        with self._lock:
            data = self._cache.get(index)
            if data is not None:
                self._cache.move_to_end(index)
                return data
        data = self.decompress(index, compressed)
        if len(data) <= self._cache_bytes:
            with self._lock:
                if index not in self._cache:
                    self._cache[index] = data
                    self._cached += len(data)
                while self._cached > self._cache_bytes:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached -= len(dropped)
        return data

    def window(self, start: int, end: int) -> tuple[int, bytes]:
        """The frame holding plain byte ``start``, with where it starts (for a lazy parse)."""
        index = self.frame_of(start)
        return self._starts[index], self.frame(index)

    def read_into(self, pos: int, out: memoryview) -> None:
        """Fill ``out`` with the plain bytes from ``pos``.

        Frames wholly inside the range are decompressed straight through (a big read does not
        evict the cache); the partial frames at its two ends go through the cache, since the
        neighbouring rows or records are likely to be read next.
        """
        end = pos + out.nbytes
        if pos < 0 or end > self.size:
            raise TruncatedError(
                f"bytes {pos:,} to {end:,} are past the end of the stream ({self.size:,})", pos
            )
        done = 0
        while done < out.nbytes:
            here = pos + done
            index = self.frame_of(here)
            start, stop = self.frame_span(index)
            if here == start and stop <= end:
                done += self._read_whole_frames(index, end, out[done:])
                continue
            take = min(stop, end) - here
            data = self.frame(index)
            out[done : done + take] = memoryview(data)[here - start : here - start + take]
            done += take

    def _read_whole_frames(self, index: int, end: int, out: memoryview) -> int:
        """Decompress the frames from ``index`` that lie wholly before ``end`` into ``out``,
        their compressed bytes fetched at once (up to ``_GROUP_BYTES``); returns bytes done."""
        last = bisect.bisect_right(self._starts, end) - 2
        limit = bisect.bisect_right(self._packed, self._packed[index] + _GROUP_BYTES) - 2
        last = max(index, min(last, limit))
        base = self._packed[index]
        blob = self._compressed.bytes_at(base, self._packed[last + 1])
        done = 0
        for current in range(index, last + 1):
            frame = blob[self._packed[current] - base : self._packed[current + 1] - base]
            data = self.decompress(current, frame)
            out[done : done + len(data)] = data
            done += len(data)
        return done

    def read(self, pos: int, count: int) -> bytearray:
        out = bytearray(count)
        self.read_into(pos, memoryview(out))
        return out


def seek_table_of(source: RangedSource, tail: int = 64 << 10) -> list[tuple[int, int]] | None:
    """The seek table of a seekable zstd file read by range, from one request for its last
    ``tail`` bytes (a second one when the table is longer); None without a seek table.

    The bytes go into a sparse mapping as long as the file, so that the table is read and
    checked exactly as :func:`~.compression.read_seek_table` does for a mapped file.
    """
    size = source.size
    if size < SKIPPABLE_HEADER.size + FOOTER.size:
        return None
    start = size - min(size, tail)
    data = source.read_exact(start, size - start)
    count, descriptor, magic = FOOTER.unpack_from(data, data.nbytes - FOOTER.size)
    if magic != SEEKABLE_MAGIC:
        return None
    entry_size = ENTRY.size + (4 if descriptor & 0x80 else 0)
    table = SKIPPABLE_HEADER.size + count * entry_size + FOOTER.size
    if start > size - table >= 0:  # a longer table: fetch the rest of it
        data = memoryview(b"".join((source.read_exact(size - table, start - size + table), data)))
        start = size - table
    sparse = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | _MAP_NORESERVE)
    try:
        sparse[start:] = data
        return read_seek_table(sparse)
    finally:
        sparse.close()


def _frame_source(compressed: Any, entries: list[tuple[int, int]], options: Any) -> FrameSource:
    return FrameSource(compressed, entries, **options)


WHOLE_FACTOR = 16  # a records stream is read whole once the parse has reached 1/16 of it
_NEVER = 1 << 62


class DenseRecords(BaseException):
    """Internal: a parse by windows found a stream of records with little tensor data between
    them, which costs less read whole and parsed at C speed (see :class:`FrameDecoder`).

    A BaseException, so that no ``except Exception`` on the way (a class codec's read turns
    what it catches into a FormatError) can take it for a damaged value."""


class FrameDecoder(BinaryDecoder):
    """A binary decoder that reads only the parts of a stream that it parses.

    ``source`` is any :class:`~streamser.io.ranged.ByteSource`: a :class:`FrameSource` (a
    seekable zstd file) or a :class:`~streamser.io.ranged.RangedSource` (a file object or URL).
    The decoder's buffer is a sparse private anonymous mapping as long as the plain stream, so
    positions, error offsets and every base-class check stay those of the plain file. Before
    each read the bytes under it are copied into the mapping, a window at a time (a frame, or a
    read-ahead window); windows that parsing has left behind are released (``MADV_DONTNEED``),
    so memory stays near a few windows whatever the file's size. Storage elements are skipped,
    never read.

    With ``whole_after``, once the parse has passed that many fetched bytes (storage elements
    beyond the read-ahead window are stepped over, never fetched) it looks at what it passed.
    If storage elements are less than half of it, the stream is mostly records (the Python
    parse's work; a file of many small tensors, where every byte is fetched anyway), and when
    the whole stream is at most :data:`WHOLE_FACTOR` times the position reached,
    :class:`DenseRecords` is raised for the caller to read it whole. Otherwise it looks again
    when it has passed twice as many fetched bytes: a file of records after a few big storages
    is read whole later; a checkpoint of layers, or records followed by a big tensor, never.
    """

    _KEEP_BEHIND = 16  # bytes a read may re-read before the position (a geometry's ndim)

    def __init__(
        self, source: ByteSource, long_size: int = 8, pos: int = 0, whole_after: int | None = None
    ) -> None:
        self.source = source
        self._whole_after = whole_after
        self._unfetched = 0  # storage bytes stepped over beyond the window: never fetched
        self._skipped = 0  # storage bytes stepped over, fetched or not
        self._look_at = _NEVER if whole_after is None else whole_after  # position of the next look
        flags = mmap.MAP_PRIVATE | _MAP_NORESERVE
        self._map = mmap.mmap(-1, max(source.size, 1), flags=flags)
        super().__init__(self._map, long_size, pos)
        self.size = source.size  # the mapping is at least one byte long
        self._filled: dict[int, int] = {}  # windows copied into the mapping: start -> end
        self._starts: list[int] = []  # the keys of _filled, sorted: a window found by bisection
        self._hot_start = self._hot_end = 0  # the window the last read fell in

    def close(self) -> None:
        """Release the mapping (the parsed values never point into it)."""
        self.buffer.release()
        self._map.close()

    def _ready(self, start: int, end: int) -> None:
        """Make plain bytes ``start:end`` readable (clipped to the stream)."""
        if self._hot_start <= start and end <= self._hot_end:
            return  # the common case, kept short: a parse makes millions of these calls
        end = min(end, self.size)
        pos = start
        while pos < end:
            self._hot_start, self._hot_end = self._filled_at(pos) or self._fill(pos, end)
            pos = self._hot_end
        self._release_before(start - self._KEEP_BEHIND)

    def _fill(self, pos: int, end: int) -> tuple[int, int]:
        """Copy the source's window for ``pos`` into the mapping."""
        lo, data = self.source.window(pos, end)
        hi = lo + len(data)
        self._map[lo:hi] = data
        if lo not in self._filled:
            bisect.insort(self._starts, lo)
        self._filled[lo] = max(hi, self._filled.get(lo, hi))
        return lo, hi

    def _filled_at(self, pos: int) -> tuple[int, int] | None:
        """The filled window that starts last at or before ``pos``, if it holds ``pos``
        (bisection: a long string over thousands of tiny frames must not cost a scan per
        frame). Refilling a window that an earlier, longer one also covers is harmless."""
        at = bisect.bisect_right(self._starts, pos) - 1
        if at < 0:
            return None
        lo = self._starts[at]
        hi = self._filled[lo]
        return (lo, hi) if pos < hi else None

    def _release_before(self, pos: int) -> None:
        starts, filled = self._starts, self._filled
        stale = [
            (lo, filled[lo])
            for lo in starts[: bisect.bisect_left(starts, pos)]
            if filled[lo] <= pos
        ]
        for start, stop in stale:
            del self._filled[start]
            del starts[bisect.bisect_left(starts, start)]
            first = -(-start // _PAGE) * _PAGE
            last = stop // _PAGE * _PAGE
            if last > first:
                self._map.madvise(mmap.MADV_DONTNEED, first, last - first)

    # The grammar (spec/grammar.py) reads a record part by part and asks each primitive for an
    # exact number of bytes; each makes just those bytes ready, then lets the plain decoder do
    # the rest (including its checks and errors, which then speak of the plain stream).

    def _ahead(self, nbytes: int) -> None:
        if self.pos >= self._look_at:
            self._decide(self.pos)
        if 0 < nbytes <= self.remaining():
            self._ready(self.pos, self.pos + nbytes)

    def read_int(self) -> int:
        self._ahead(4)
        return super().read_int()

    def read_long(self) -> int:
        self._ahead(self.long_size)
        return super().read_long()

    def read_longs(self, count: int) -> tuple[int, ...]:
        self._ahead(count * self.long_size)
        return super().read_longs(count)

    def read_double(self) -> float:
        self._ahead(8)
        return super().read_double()

    def read_raw(self, count: int) -> bytes:
        self._ahead(count)
        data = super().read_raw(count)
        if count > 1 << 16:  # a big string: its frames are not held beside the copy
            self._release_before(self.pos - self._KEEP_BEHIND)
        return data

    def read_array(self, element: ElementType, count: int) -> Any:
        """A :class:`LazyStorage` for the elements; they are checked to exist, not read."""
        from ..values.lazy import LazyStorage  # deferred: lazy imports this module

        file_dtype = element.file_dtype(self.long_size)
        nbytes = count * file_dtype.itemsize
        if count <= 0 or nbytes > self.remaining():
            return super().read_array(element, count)  # empty, or the plain decoder's error
        start = self.pos
        self.pos += nbytes
        self._skipped += nbytes
        if self.pos > self._hot_end:  # the next window starts after it: those bytes stay away
            self._unfetched += self.pos - max(start, self._hot_end)
            if self._whole_after is not None:
                self._look_at = self._whole_after + self._unfetched
        if element.is_long:
            self.longs_read += 1
        return LazyStorage(self.source, start, count, file_dtype, element.dtype)

    def _decide(self, pos: int) -> None:
        """Raise :class:`DenseRecords`, or look again later (see the class)."""
        if 2 * self._skipped < pos and self.size <= WHOLE_FACTOR * pos:
            raise DenseRecords
        self._whole_after = 2 * (pos - self._unfetched)
        self._look_at = self._whole_after + self._unfetched


__all__ = ["DenseRecords", "FrameDecoder", "FrameSource"]
