"""Random access to a seekable zstd stream: any byte range, decompressing only its frames.

The seek table gives every frame's compressed and decompressed size, so the frame holding a
byte of the plain stream is found by bisection and decompressed alone. Two readers build on it:

* :class:`FrameSource` reads byte ranges, keeping a few recently used frames in a cache of
  bounded size (``cache_bytes``), and fills big ranges straight into the caller's array without
  caching them, so reading a 16 MiB tensor costs about one decompression of its frames.
* :class:`FrameDecoder` is the binary decoder over such a stream, for parsing the object graph
  lazily: it sees the whole plain stream through a *sparse* anonymous mapping, fills in only the
  frames that records are read from, and gives those pages back to the system once parsing has
  moved on. Storage elements are never decompressed while parsing: ``read_array`` returns a
  :class:`~streamser.values.lazy.LazyStorage` that knows where they are.

Every frame is checked as it is decompressed: its header's content size against the seek
table's, its length against the table's, and its content checksum by zstd itself. A damaged
frame raises :class:`~streamser.errors.FormatError` at the frame's compressed offset.
"""

from __future__ import annotations

import bisect
import mmap
from collections import OrderedDict
from itertools import accumulate
from typing import Any

import zstandard

from ..codecs.binary import BinaryDecoder
from ..errors import FormatError, TruncatedError
from ..spec.format import ElementType
from .compression import MAX_FRAME_SIZE, ZSTD_MAGIC, _too_big

DEFAULT_CACHE_BYTES = 32 << 20  # decompressed frames kept for small reads
_UNKNOWN_SIZE = zstandard.CONTENTSIZE_UNKNOWN
_PAGE = mmap.PAGESIZE
_MAP_NORESERVE = 0x4000  # Linux: reserve no swap for the sparse mapping (it is mostly untouched)


class FrameSource:
    """The plain bytes of a seekable zstd stream, read by range.

    ``buffer`` is the compressed input (a mapping of the file, usually) and ``entries`` its seek
    table's (compressed, decompressed) sizes. ``max_size`` bounds the declared total.
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
        self._view = memoryview(buffer).cast("B")
        self._packed = [0, *accumulate(c for c, _ in entries)]  # where each frame starts
        self._starts = [0, *accumulate(d for _, d in entries)]  # ...and its plain bytes start
        self.size = self._starts[-1]
        if self.size > max_size:
            raise _too_big(self.size, max_size)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._cache_bytes = cache_bytes
        self._decompressor = zstandard.ZstdDecompressor()
        self.frames_decompressed = 0  # for tests and benchmarks: work actually done

    @property
    def frame_count(self) -> int:
        return len(self._starts) - 1

    def frame_of(self, pos: int) -> int:
        """The frame holding plain byte ``pos`` (0 <= pos < size)."""
        return bisect.bisect_right(self._starts, pos) - 1

    def frame_span(self, index: int) -> tuple[int, int]:
        """Plain (start, end) of frame ``index``."""
        return self._starts[index], self._starts[index + 1]

    def decompress(self, index: int) -> bytes:
        """Frame ``index`` decompressed and checked (not cached)."""
        start, end = self._packed[index], self._packed[index + 1]
        expected = self._starts[index + 1] - self._starts[index]
        frame = self._view[start:end]
        if bytes(frame[:4]) != ZSTD_MAGIC:
            raise FormatError("expected a zstd frame where the seek table puts one", start)
        try:
            declared = zstandard.get_frame_parameters(frame).content_size
            if declared not in (_UNKNOWN_SIZE, expected):
                raise FormatError(
                    f"zstd frame declares {declared:,} bytes, the seek table {expected:,}", start
                )
            data: bytes = self._decompressor.decompress(
                frame, max_output_size=expected, allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            raise FormatError(f"damaged zstd frame: {exc}", start) from None
        if len(data) != expected:
            raise FormatError(
                f"zstd frame holds {len(data):,} bytes, the seek table {expected:,}", start
            )
        self.frames_decompressed += 1
        return data

    def frame(self, index: int) -> bytes:
        """Frame ``index`` through the cache."""
        data = self._cache.get(index)
        if data is not None:
            self._cache.move_to_end(index)
            return data
        data = self.decompress(index)
        if len(data) <= self._cache_bytes:
            self._cache[index] = data
            self._cached += len(data)
            while self._cached > self._cache_bytes:
                _, dropped = self._cache.popitem(last=False)
                self._cached -= len(dropped)
        return data

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
            whole = here == start and stop <= end
            data = self.decompress(index) if whole else self.frame(index)
            take = min(stop, end) - here
            out[done : done + take] = memoryview(data)[here - start : here - start + take]
            done += take

    def read(self, pos: int, count: int) -> bytearray:
        out = bytearray(count)
        self.read_into(pos, memoryview(out))
        return out


class FrameDecoder(BinaryDecoder):
    """A binary decoder over a seekable zstd stream that decompresses only what it parses.

    The decoder's buffer is a sparse private anonymous mapping as long as the plain stream, so
    positions, error offsets and every base-class check stay those of the plain file. Before
    each read the frames under it are decompressed into the mapping; frames that parsing has
    left behind are released (``MADV_DONTNEED``), so memory stays near a few frames whatever
    the file's size. Storage elements are skipped, never decompressed.
    """

    _KEEP_BEHIND = 16  # bytes a read may re-read before the position (a geometry's ndim)

    def __init__(self, source: FrameSource, long_size: int = 8, pos: int = 0) -> None:
        self.source = source
        flags = mmap.MAP_PRIVATE | _MAP_NORESERVE
        self._map = mmap.mmap(-1, max(source.size, 1), flags=flags)
        super().__init__(self._map, long_size, pos)
        self.size = source.size  # the mapping is at least one byte long
        self._filled: dict[int, tuple[int, int]] = {}  # frame -> plain (start, end)

    def close(self) -> None:
        """Release the mapping (the parsed values never point into it)."""
        self.buffer.release()
        self._map.close()

    def _ready(self, start: int, end: int) -> None:
        """Make plain bytes ``start:end`` readable (clipped to the stream)."""
        end = min(end, self.size)
        if start >= end:
            return
        source = self.source
        index = source.frame_of(start)
        while True:
            span = self._filled.get(index)
            if span is None:
                span = source.frame_span(index)
                self._map[span[0] : span[1]] = source.frame(index)
                self._filled[index] = span
            if span[1] >= end:
                break
            index += 1
        self._release_before(start - self._KEEP_BEHIND)

    def _release_before(self, pos: int) -> None:
        stale = [index for index, (_, stop) in self._filled.items() if stop <= pos]
        for index in stale:
            start, stop = self._filled.pop(index)
            first = -(-start // _PAGE) * _PAGE
            last = stop // _PAGE * _PAGE
            if last > first:
                self._map.madvise(mmap.MADV_DONTNEED, first, last - first)

    # Every read makes its bytes ready, then lets the plain decoder do the rest (including its
    # checks and errors, which then speak of the plain stream).

    def read_int(self) -> int:
        self._ready(self.pos, self.pos + 4)
        return super().read_int()

    def read_long(self) -> int:
        self._ready(self.pos, self.pos + self.long_size)
        return super().read_long()

    def read_longs(self, count: int) -> tuple[int, ...]:
        if 0 < count * self.long_size <= self.remaining():
            self._ready(self.pos, self.pos + count * self.long_size)
        return super().read_longs(count)

    def read_double(self) -> float:
        self._ready(self.pos, self.pos + 8)
        return super().read_double()

    def read_raw(self, count: int) -> bytes:
        if 0 < count <= min(self.max_string, self.remaining()):
            self._ready(self.pos, self.pos + count)
        return super().read_raw(count)

    def read_string(self) -> bytes:
        pos = self.pos
        self._ready(pos, pos + 4)
        if pos + 4 <= self.size:
            count = int.from_bytes(self._map[pos : pos + 4], "little", signed=True)
            if 0 < count <= min(self.max_string, self.size - pos - 4):
                self._ready(pos, pos + 4 + count)
        data = super().read_string()
        self._release_before(self.pos - self._KEEP_BEHIND)  # a big string: not held twice
        return data

    def read_geometry(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        pos = self.pos
        self._ready(pos, pos + 4)
        if pos + 4 <= self.size:
            ndim = int.from_bytes(self._map[pos : pos + 4], "little", signed=True)
            need = (2 * ndim + 1) * self.long_size
            if ndim >= 0 and need <= self.size - pos - 4:
                self._ready(pos, pos + 4 + need)
        return super().read_geometry()

    def read_array(self, element: ElementType, count: int) -> Any:
        """A :class:`LazyStorage` for the elements; they are checked to exist, not read."""
        from ..values.lazy import LazyStorage  # deferred: lazy imports this module

        file_dtype = element.file_dtype(self.long_size)
        nbytes = count * file_dtype.itemsize
        if count <= 0 or nbytes > self.remaining():
            return super().read_array(element, count)  # empty, or the plain decoder's error
        start = self.pos
        self.pos += nbytes
        if element.is_long:
            self.longs_read += 1
        return LazyStorage(self.source, start, count, file_dtype, element.dtype)


__all__ = ["FrameDecoder", "FrameSource"]
