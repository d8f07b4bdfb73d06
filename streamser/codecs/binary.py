"""Binary primitives: little-endian ints, longs of 4 or 8 bytes, doubles, strings, raw arrays.

The decoder works in place over one buffer (``bytes``, ``mmap``, ``memoryview``) with
``struct.unpack_from``: no slicing copies for headers, and arrays come back as ``numpy`` views of
the buffer itself (zero-copy), except b32 Long arrays, which widen to int64. Records that are
always read together (a string's length and bytes, a tensor's geometry) are one call each, so
that a file of many small tensors costs few Python calls per record.
"""

from __future__ import annotations

import mmap
import struct
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import FormatError, TruncatedError, UnsupportedValueError
from ..io.arrays import (
    ChunkSource,
    byte_view,
    file_mapping,
    iter_chunks,
    mapped_file_identity,
    mostly_mapped_in,
)
from ..io.sink import DIRECT_THRESHOLD, Sink
from ..io.windows import write_in_windows
from ..spec.format import INT32_MAX, INT32_MIN, ElementType
from .convert import convert_chunk

_INT = struct.Struct("<i")
_TWO_INTS = struct.Struct("<ii")
_DOUBLE = struct.Struct("<d")
_LONG = {4: struct.Struct("<i"), 8: struct.Struct("<q")}
CHUNK_BYTES = 1 << 24  # bytes converted at a time when an array needs converting on write


@lru_cache(maxsize=256)
def _longs_struct(count: int, long_size: int) -> struct.Struct:
    return struct.Struct(f"<{count}{'q' if long_size == 8 else 'i'}")


@lru_cache(maxsize=64)
def _geometry_struct(ndim: int, long_size: int) -> struct.Struct:
    """int nDimension, long sizes[n], long strides[n], long storageOffset+1."""
    return struct.Struct(f"<i{2 * ndim + 1}{'q' if long_size == 8 else 'i'}")


class BinaryDecoder:
    """Reads primitives from ``buffer`` starting at ``pos``."""

    is_ascii = False
    min_record = 4  # bytes of the smallest value (a nil tag)

    def __init__(self, buffer: Any, long_size: int = 8, pos: int = 0) -> None:
        self.buffer = memoryview(buffer).cast("B")
        # bytes and mmap slice straight to bytes; other buffers go through the memoryview.
        self._sliceable = buffer if isinstance(buffer, (bytes, mmap.mmap)) else None
        self.size = self.buffer.nbytes
        self.pos = pos
        self.long_size = long_size
        self.min_long_bytes = long_size
        self._long = _LONG[long_size]
        self.longs_read = 0  # lets format detection see whether long size mattered
        self.max_string = 1 << 62  # set by the graph reader from its limits

    def remaining(self) -> int:
        return self.size - self.pos

    def _need(self, nbytes: int, what: str, *args: object) -> int:
        """Claim ``nbytes``; ``what % args`` names them in the error (formatted only then)."""
        pos = self.pos
        if nbytes > self.size - pos:
            raise TruncatedError(
                f"input ends inside {what % args}: {nbytes} bytes needed, {self.size - pos} left",
                pos,
            )
        self.pos = pos + nbytes
        return pos

    def _bytes(self, start: int, end: int) -> bytes:
        if self._sliceable is not None:
            data: bytes = self._sliceable[start:end]
            return data
        return self.buffer[start:end].tobytes()

    def read_int(self) -> int:
        pos = self.pos
        if pos + 4 > self.size:
            self._need(4, "an int")
        self.pos = pos + 4
        value: int = _INT.unpack_from(self.buffer, pos)[0]
        return value

    def read_long(self) -> int:
        self.longs_read += 1
        pos = self._need(self.long_size, "a long")
        value: int = self._long.unpack_from(self.buffer, pos)[0]
        return value

    def read_longs(self, count: int) -> tuple[int, ...]:
        if count == 0:
            return ()
        self.longs_read += count
        pos = self._need(count * self.long_size, "%d longs", count)
        return _longs_struct(count, self.long_size).unpack_from(self.buffer, pos)

    def read_double(self) -> float:
        pos = self.pos
        if pos + 8 > self.size:
            self._need(8, "a double")
        self.pos = pos + 8
        value: float = _DOUBLE.unpack_from(self.buffer, pos)[0]
        return value

    def read_raw(self, count: int) -> bytes:
        """``count`` raw bytes (a Lua string's contents, a class name)."""
        if count < 0:
            raise FormatError(f"negative byte count {count}", self.pos - 4)
        pos = self._need(count, "a string of %d bytes", count)
        return self._bytes(pos, pos + count)

    def read_array(self, element: ElementType, count: int) -> np.ndarray[Any, Any]:
        """``count`` elements as a view of the buffer (b32 Longs widen to a new int64 array)."""
        dtype = element.dtype
        if element.is_long:
            self.longs_read += 1
            dtype = element.file_dtype(self.long_size)
        pos = self.pos
        end = pos + count * dtype.itemsize
        if count <= 0 or end > self.size:
            if count == 0:
                return np.empty(0, dtype=element.dtype)
            self._need(count * dtype.itemsize, "%d %s elements", count, element.name)
        self.pos = end
        array = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=pos)
        if dtype is not element.dtype:
            array = array.astype(element.dtype)
        return array

    def skip_array(self, element: ElementType, count: int) -> int:
        """Step over ``count`` elements; returns their byte offset (for lazy indexes)."""
        dtype = element.file_dtype(self.long_size)
        return self._need(count * dtype.itemsize, "%d %s elements", count, element.name)


class BinaryEncoder:
    """Writes primitives to a :class:`Sink`."""

    is_ascii = False

    def __init__(self, sink: Sink, long_size: int = 8) -> None:
        self.sink = sink
        self._buffer = sink.buffer  # records are appended here; the writer settles the sink
        self.long_size = long_size
        self._long = _LONG[long_size]
        self._long_min = -(2 ** (8 * long_size - 1))
        self._long_max = 2 ** (8 * long_size - 1) - 1

    def write_int(self, value: int) -> None:
        if not INT32_MIN <= value <= INT32_MAX:
            raise UnsupportedValueError(f"{value} does not fit the format's 4-byte int")
        self._buffer += _INT.pack(value)

    def write_record(self, tag: int, index: int) -> None:
        """A type tag and an object index."""
        if index > INT32_MAX:
            raise UnsupportedValueError(f"more than {INT32_MAX} objects in one stream")
        self._buffer += _TWO_INTS.pack(tag, index)

    def write_long(self, value: int) -> None:
        self._buffer += self._pack_long(value)

    def _pack_long(self, value: int) -> bytes:
        if not self._long_min <= value <= self._long_max:
            raise UnsupportedValueError(f"{value} does not fit a {self.long_size}-byte long")
        return self._long.pack(value)

    def write_longs(self, values: tuple[int, ...]) -> None:
        if values:
            try:
                data = _longs_struct(len(values), self.long_size).pack(*values)
            except struct.error:
                for value in values:
                    self._pack_long(value)  # raises the precise error
                raise
            self._buffer += data

    def write_geometry(self, sizes: tuple[int, ...], strides: tuple[int, ...], offset: int) -> None:
        """A tensor's nDimension, sizes, strides and 1-based storage offset."""
        try:
            data = _geometry_struct(len(sizes), self.long_size).pack(
                len(sizes), *sizes, *strides, offset + 1
            )
        except struct.error:
            self.write_longs((*sizes, *strides, offset + 1))  # raises the precise error
            raise
        self._buffer += data

    def write_double(self, value: float) -> None:
        self._buffer += _DOUBLE.pack(value)

    def write_raw(self, data: bytes) -> None:
        if len(data) < DIRECT_THRESHOLD:
            self._buffer += data
        else:
            self.sink.write_large(memoryview(data))

    def encode_string(self, data: bytes) -> bytes:
        """An int length and the bytes, encoded (for records the caller caches)."""
        return _INT.pack(len(data)) + data

    def write_string(self, data: bytes) -> None:
        self._buffer += _INT.pack(len(data))
        self.write_raw(data)

    def write_encoded(self, data: bytes) -> None:
        """Bytes that came from this encoder's ``encode_*`` methods."""
        self._buffer += data

    def settle(self) -> None:
        """Let the sink drain what has gathered (called once per value by the graph writer)."""
        self.sink.settle()

    def _write_claimed(self, data: memoryview) -> None:
        self.sink.write_large(data, claimed=True)

    def write_array(self, element: ElementType, data: np.ndarray[Any, Any] | ChunkSource) -> None:
        """Write ``data``'s elements in C order, converting in bounded chunks if needed; a
        :class:`ChunkSource` (a lazily read storage) is read and written a chunk at a time."""
        dtype = element.file_dtype(self.long_size)
        if isinstance(data, np.ndarray) and data.dtype == dtype and data.flags.c_contiguous:
            place = file_mapping(data) if data.nbytes >= CHUNK_BYTES else None
            if place is None or mostly_mapped_in(data):  # as it is, in one piece: the sink
                self.sink.write_large(byte_view(data))  # cuts it for its target
                return
            # An np.memmap not faulted in yet: copied by the file server where there is one,
            # else written a window at a time, each faulted in with one call first
            done = 0
            if self.sink.copies_files:
                identity = mapped_file_identity(data)
                done = self.sink.copy_from_file(place.path, place.offset, data.nbytes, identity)
            if done < data.nbytes:
                self.sink.claim(data.nbytes - done)
                write_in_windows(data, place, self._write_claimed, start=done)
            return
        for chunk in iter_chunks(data, CHUNK_BYTES):
            if chunk.dtype != dtype:  # byte order, a cast, or b32 Longs keeping their low 32 bits
                chunk = convert_chunk(chunk, dtype)
            self.sink.write_large(byte_view(chunk))
            del chunk  # a chunk read from a file is freed before the next one is read
