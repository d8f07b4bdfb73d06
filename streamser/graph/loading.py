"""One value from a buffer: unwrapped from zstd, its format told apart, then read.

``load``, ``deserialize`` and ``open`` all come through here, so format detection (ascii,
binary, b32) and decompression behave the same for every entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..codecs import BinaryDecoder, decoder_for
from ..errors import AmbiguousFormatError, FormatError
from ..io.compression import decompress, is_zstd, read_seek_table
from ..io.mapping import parsing
from ..io.seekable import FrameDecoder, FrameSource
from ..spec.detect import sniff_ascii
from ..spec.format import FORMATS, Format, get_format
from ..spec.limits import Limits, memory_errors_as_limits
from .reader import GraphReader


@memory_errors_as_limits("reading the input")
def read_buffer(
    buffer: Any, start: int, format: str | None, *, referenced: bool, limits: Limits
) -> Reading:
    """One value from ``buffer``: unwrapped from zstd if compressed, then read or detected."""
    if is_zstd(buffer, start):
        buffer = decompress(memoryview(buffer)[start:], max_size=limits.max_decompressed)
        start = 0
    with parsing(buffer):
        if format is None:
            return read_detected(buffer, start, referenced=referenced, limits=limits)
        return read_one(buffer, start, get_format(format), referenced=referenced, limits=limits)


@dataclass(frozen=True)
class Reading:
    """One value read from a buffer: the value, the format it was read in, where it ended."""

    value: Any
    format: Format
    end: int
    buffer: Any  # what was read: the input, or its decompressed contents


def read_one(
    buffer: Any, start: int, fmt: Format, *, referenced: bool = True, limits: Limits | None = None
) -> Reading:
    """Read one value in a known format."""
    if fmt.ascii and isinstance(buffer, (memoryview, bytearray)):
        buffer = bytes(buffer)  # the ascii scanner needs find() and regular expressions
    decoder = decoder_for(fmt, buffer, start)
    value = GraphReader(decoder, referenced=referenced, limits=limits).read_object()
    return Reading(value, fmt, decoder.pos, buffer)


def read_detected(
    buffer: Any,
    start: int,
    *,
    referenced: bool = True,
    limits: Limits | None = None,
    decoder_for_long: Callable[[int], BinaryDecoder] | None = None,
) -> Reading:
    """Read one value, telling ascii, binary (8-byte long) and b32 (4-byte long) apart.

    Ascii starts with a printed digit. For binary input both long sizes are tried; a reading
    that consumes the whole input wins, and when long size did not matter the result is the
    same either way. If both readings succeed and neither is exact, the input is ambiguous.
    ``decoder_for_long`` makes the binary decoder for a long size (the lazy reader of a
    compressed file passes its own; ``buffer`` then only serves the ascii sniff).
    """
    if sniff_ascii(buffer, start):
        return read_one(buffer, start, FORMATS["ascii"], referenced=referenced, limits=limits)
    if decoder_for_long is None:
        decoder_for_long = partial(BinaryDecoder, buffer, pos=start)
    readings: dict[str, Reading] = {}
    failures: dict[str, FormatError] = {}
    for fmt in (FORMATS["binary"], FORMATS["b32"]):
        decoder = decoder_for_long(fmt.long_size)
        try:
            value = GraphReader(decoder, referenced=referenced, limits=limits).read_object()
        except FormatError as exc:
            failures[fmt.name] = exc
            continue
        reading = Reading(value, fmt, decoder.pos, buffer)
        if decoder.longs_read == 0 or decoder.remaining() == 0:
            return reading  # explains every byte, or long size never mattered
        readings[fmt.name] = reading
    if "binary" in readings and "b32" in readings:
        raise AmbiguousFormatError(
            "the input reads both as binary (8-byte longs) and as b32 (4-byte longs), each "
            "leaving bytes unread; pass format='binary' or format='b32'",
            readings["binary"].end,
        )
    if "binary" in readings:  # Torch's own layout followed by more data, as torch.load allows
        return readings["binary"]
    # A damaged binary file must not pass for a b32 one that stops early: report binary's error.
    error = failures["binary"]
    if "b32" in readings:
        error.add_note("it reads as b32 only if trailing bytes are ignored: pass format='b32'")
    else:
        error.add_note(f"reading it as b32 (4-byte longs) failed too: {failures['b32']}")
    raise error


@memory_errors_as_limits("reading the input")
def read_lazily(
    buffer: Any, start: int, format: str | None, *, referenced: bool, limits: Limits
) -> tuple[Reading, FrameSource] | None:
    """One value from a seekable zstd input, decompressing only the frames of its records.

    Tensors and storages come back as :mod:`~streamser.values.lazy` placeholders reading from the
    returned :class:`FrameSource`. None when the input cannot be read that way (no seek table,
    or ascii inside): the caller decompresses it whole instead.
    """
    view = memoryview(buffer).cast("B")[start:]
    entries = read_seek_table(view)
    if entries is None:
        return None
    source = FrameSource(view, entries, max_size=limits.max_decompressed)
    head = bytes(source.read(0, min(1, source.size)))
    fmt = get_format(format) if format is not None else None
    if fmt.ascii if fmt is not None else sniff_ascii(head, 0):
        return None
    decoders: list[FrameDecoder] = []

    def decoder_for_long(long_size: int) -> BinaryDecoder:
        decoders.append(FrameDecoder(source, long_size))
        return decoders[-1]

    try:
        if fmt is None:
            reading = read_detected(
                head, 0, referenced=referenced, limits=limits, decoder_for_long=decoder_for_long
            )
        else:
            decoder = decoder_for_long(fmt.long_size)
            value = GraphReader(decoder, referenced=referenced, limits=limits).read_object()
            reading = Reading(value, fmt, decoder.pos, head)
    finally:
        for decoder in decoders:
            decoder.close()
    return reading, source
