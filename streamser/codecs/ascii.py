"""Ascii primitives, as Torch7's DiskFile prints and scans them.

Numbers: each write of n numbers is one line, separated by single spaces (nothing at all for
n = 0); ints ``%d``, longs ``%ld``, floats and halves ``%.9g``, doubles ``%.17g`` with ``nan`` /
``-nan`` by sign bit. Byte and char arrays are raw bytes then a newline. Reading follows C
``scanf``: white space before a number is skipped, and after each array one newline is taken if
present.

Number runs (a storage's elements) are formatted and parsed by ``streamser._fastascii`` when it
is built: C loops that print and scan exactly as the Python code below does and hand anything
unusual (and every error) back to it. The Python code is the reference, and the fallback:
bounded chunks through C-level ``map`` calls, never a Python loop per element.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..errors import FormatError, TruncatedError
from ..io.arrays import ChunkSource, byte_view, iter_chunks
from ..io.sink import Sink
from ..spec.format import ElementType
from ..speedups import compiled
from .binary import CHUNK_BYTES
from .convert import convert_chunk

# The compiled number loops, or None for pure Python (set it to None to compare the two).
_FAST = compiled("_fastascii")

_WHITESPACE = b" \t\n\r\v\f"
_TOKEN = re.compile(rb"[ \t\n\r\v\f]*([^ \t\n\r\v\f]+)")
_SPACE = re.compile(rb"[ \t\n\r\v\f]")
_TEXT_CHUNK = 1 << 20  # bytes of text tokenised at a time
_FORMAT_CHUNK = 1 << 16  # elements formatted per piece of output (by Python)
_FAST_FORMAT_CHUNK = 1 << 18  # ... by the compiled loop (at most 26 bytes of text each)
_HALF_NAN = np.uint16(0x7FFF)  # the NaN Torch7's float-to-half conversion produces


def _parse_float(token: bytes) -> float:
    """A C ``strtod`` number: decimal, inf/nan in any case, or hexadecimal."""
    try:
        return float(token)
    except ValueError:
        text = token.decode("ascii", "replace")
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        if body[:2].lower() == "0x":
            try:
                return sign * float.fromhex(body)
            except OverflowError:  # strtod gives inf (ERANGE), as for decimal overflow
                return sign * math.inf
        raise


def _parse_floats(tokens: list[bytes], count: int) -> np.ndarray[Any, Any]:
    try:
        return np.fromiter(map(float, tokens), dtype=np.float64, count=count)
    except ValueError:
        return np.fromiter(map(_parse_float, tokens), dtype=np.float64, count=count)


class AsciiDecoder:
    """Reads primitives from an ascii stream held in ``buffer`` (bytes or mmap)."""

    is_ascii = True
    min_record = 1  # "0" is a whole nil value
    min_long_bytes = 1
    max_string = 1 << 62  # set by the graph reader from its limits
    long_size = 8
    longs_read = 0

    def __init__(self, buffer: Any, pos: int = 0) -> None:
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = pos

    def remaining(self) -> int:
        return self.size - self.pos

    def _end_of_array(self) -> None:
        if self.pos < self.size and self.buffer[self.pos] == 0x0A:
            self.pos += 1

    def _token(self, what: str) -> bytes:
        match = _TOKEN.match(self.buffer, self.pos)
        if match is None:
            raise TruncatedError(f"input ends where {what} was expected", self.pos)
        token: bytes = match.group(1)
        if b"_" in token:  # Python's int() and float() take 1_000; C's scanf does not
            raise FormatError(f"expected {what}, found {token[:20]!r}", self.pos)
        self.pos = match.end()
        return token

    def _tokens(self, count: int, what: str) -> list[bytes]:
        """The next ``count`` white-space separated tokens."""
        if count <= 4:
            return [self._token(what) for _ in range(count)]
        tokens: list[bytes] = []
        while len(tokens) < count:
            tokens += self._token_chunk(count - len(tokens), what)
        return tokens

    def _token_chunk(self, limit: int, what: str) -> list[bytes]:
        """Up to ``limit`` tokens from about ``_TEXT_CHUNK`` bytes of text (at least one).

        Bounded pieces keep memory small however long the line: a storage of a million
        numbers is one line of text, but never a million token objects at once.
        """
        start = self.pos
        while start < self.size and self.buffer[start] in _WHITESPACE:
            start += 1
        if start >= self.size:
            raise TruncatedError(f"input ends where {what} were expected", self.pos)
        end = min(self.size, start + _TEXT_CHUNK)
        newline = self.buffer.find(b"\n", start, end)  # Torch prints one array per line
        if newline >= 0:
            end = newline
        elif end < self.size:  # finish the token that the cut falls into
            space = _SPACE.search(self.buffer, end)
            end = space.start() if space else self.size
        text = self.buffer[start:end]
        parts: list[bytes] = text.split(None, limit)
        if len(parts) > limit:  # more tokens here than wanted: stop after the last one
            rest = parts.pop()
            end = start + len(text) - len(rest)
            while self.buffer[end - 1] in _WHITESPACE:
                end -= 1
        if text.find(b"_", 0, end - start) >= 0:  # int() and float() take 1_000; scanf does not
            raise FormatError(f"expected {what}, found an underscore", start)
        self.pos = end
        return parts

    def read_int(self) -> int:
        start = self.pos
        token = self._token("an int")
        self._end_of_array()
        try:
            return int(token)
        except ValueError:
            raise FormatError(f"expected an integer, found {token[:20]!r}", start) from None

    read_long = read_int

    def read_longs(self, count: int) -> tuple[int, ...]:
        if count == 0:
            return ()
        start = self.pos
        tokens = self._tokens(count, "longs")
        self._end_of_array()
        try:
            return tuple(map(int, tokens))
        except ValueError:
            raise FormatError(f"expected {count} integers", start) from None

    def read_double(self) -> float:
        start = self.pos
        token = self._token("a number")
        self._end_of_array()
        try:
            return _parse_float(token)
        except ValueError:
            raise FormatError(f"expected a number, found {token[:20]!r}", start) from None

    def read_raw(self, count: int) -> bytes:
        if count < 0:
            raise FormatError(f"negative byte count {count}", self.pos)
        if count > self.size - self.pos:
            raise TruncatedError(
                f"input ends inside a string of {count} bytes ({self.size - self.pos} left)",
                self.pos,
            )
        data = bytes(self.buffer[self.pos : self.pos + count])
        self.pos += count
        if count:
            self._end_of_array()
        return data

    def read_array(self, element: ElementType, count: int) -> np.ndarray[Any, Any]:
        """``count`` elements parsed into a new array of the element's type."""
        if element.is_raw:
            return np.frombuffer(self.read_raw(count), dtype=element.dtype).copy()
        if count == 0:
            return np.empty(0, dtype=element.dtype)
        if count > self.size - self.pos:
            raise TruncatedError(f"input too short for {count} numbers", self.pos)
        start = self.pos
        out = np.empty(count, dtype=element.dtype)
        if _FAST is not None and out.dtype.isnative:
            end = _FAST.parse_numbers(self.buffer, start, out)
            if end >= 0:
                self.pos = end
                self._end_of_array()
                return out
        filled = 0
        what = f"{element.name} elements"
        try:
            while filled < count:
                tokens = self._token_chunk(count - filled, what)
                out[filled : filled + len(tokens)] = _convert(element, tokens, len(tokens))
                filled += len(tokens)
        except FormatError:
            raise
        except (ValueError, OverflowError) as exc:
            raise FormatError(f"bad {element.name} element: {exc}", start) from None
        self._end_of_array()
        return out

    def skip_array(self, element: ElementType, count: int) -> int:
        start = self.pos
        self.read_array(element, count)
        return start


def _convert(element: ElementType, tokens: list[bytes], count: int) -> np.ndarray[Any, Any]:
    kind = element.dtype.kind
    if kind == "f":
        values = _parse_floats(tokens, count)
        with np.errstate(over="ignore"):  # like scanf, out-of-range numbers become inf
            narrowed = values.astype(element.dtype)
        if element.dtype.itemsize == 2:
            narrowed.view(np.uint16)[np.isnan(values)] = _HALF_NAN
        return narrowed
    values = np.fromiter(map(int, tokens), dtype=np.int64, count=count)
    info = np.iinfo(element.dtype.type)  # type: ignore[type-var]
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise ValueError(f"value out of range for {element.name}")
    return values.astype(element.dtype)


def format_double(value: float) -> bytes:
    if value != value:
        return b"-nan" if math.copysign(1.0, value) < 0 else b"nan"
    return b"%.17g" % value


class AsciiEncoder:
    """Writes primitives as Torch7's ascii mode prints them."""

    is_ascii = True
    long_size = 8

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def settle(self) -> None:
        self.sink.settle()

    def write_int(self, value: int) -> None:
        self.sink.write(b"%d\n" % value)

    write_long = write_int

    def write_record(self, tag: int, index: int) -> None:
        self.sink.write(b"%d\n%d\n" % (tag, index))

    def write_longs(self, values: tuple[int, ...]) -> None:
        if values:
            self.sink.write(b" ".join(b"%d" % v for v in values) + b"\n")

    def write_geometry(self, sizes: tuple[int, ...], strides: tuple[int, ...], offset: int) -> None:
        self.write_int(len(sizes))
        self.write_longs(sizes)
        self.write_longs(strides)
        self.write_int(offset + 1)

    def encode_string(self, data: bytes) -> bytes:
        return b"%d\n%s\n" % (len(data), data) if data else b"0\n"

    def write_string(self, data: bytes) -> None:
        self.sink.write(b"%d\n" % len(data))
        self.write_raw(data)

    def write_encoded(self, data: bytes) -> None:
        self.sink.write(data)

    def write_double(self, value: float) -> None:
        self.sink.write(format_double(value) + b"\n")

    def write_raw(self, data: bytes) -> None:
        if data:
            self.sink.write(data)
            self.sink.write(b"\n")

    def write_array(self, element: ElementType, data: np.ndarray[Any, Any] | ChunkSource) -> None:
        """The elements on one line; a :class:`ChunkSource` is read a chunk at a time."""
        if data.size == 0:
            return
        if element.is_raw:
            for chunk in iter_chunks(data, CHUNK_BYTES):
                if chunk.dtype != element.dtype:  # a cast to Byte or Char: the new type's bytes
                    chunk = convert_chunk(chunk, element.dtype)
                self.sink.write_large(byte_view(chunk))
                del chunk  # a chunk read from a file is freed before the next one is read
        else:
            self._write_numbers(element, data)
        self.sink.write(b"\n")

    def _write_numbers(
        self, element: ElementType, data: np.ndarray[Any, Any] | ChunkSource
    ) -> None:
        """The elements on one line, separated by spaces, formatted in bounded chunks."""
        fast = _FAST
        step = (_FORMAT_CHUNK if fast is None else _FAST_FORMAT_CHUNK) * data.dtype.itemsize
        for index, chunk in enumerate(iter_chunks(data, step)):
            if (chunk.dtype.kind, chunk.itemsize) != (element.dtype.kind, element.itemsize):
                chunk = convert_chunk(chunk, element.dtype)  # a cast: print the new type
            if index:
                self.sink.write(b" ")
            if fast is None:
                self.sink.write(_format_chunk(element, chunk).encode("ascii"))
                continue
            if not chunk.dtype.isnative:
                chunk = chunk.astype(chunk.dtype.newbyteorder("="))
            self.sink.write_large(memoryview(fast.format_numbers(chunk)))


def _format_chunk(element: ElementType, chunk: np.ndarray[Any, Any]) -> str:
    if element.dtype.kind != "f":
        return " ".join(map(str, chunk.tolist()))
    texts = list(map(element.ascii_format.__mod__, chunk.tolist()))
    negative_nans = np.flatnonzero(np.isnan(chunk) & np.signbit(chunk))
    for index in negative_nans.tolist():  # only NaNs, which are rare
        texts[index] = "-nan"
    return " ".join(texts)
