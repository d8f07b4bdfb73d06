"""One value from a buffer: unwrapped from zstd, its format told apart, then read.

``load``, ``deserialize``, ``open``, ``streamser dis`` and ``verify`` all come through here, so
what an input is (a foreign format, zstd with or without a seek table), its format (ascii,
binary, b32) and how a compressed one is reached behave the same for every entry point:

* :func:`open_input` unwraps an input: a :class:`Plain` stream in a buffer (decompressed if it
  was plain zstd), or a :class:`Framed` stream read part by part from a byte source (a
  seekable zstd stream frame by frame, a file object or URL by range: :func:`read_ranged`);
* :func:`detect` tells the formats apart by running a reading in each (the graph reader for
  values, the record walk of :mod:`streamser.spec.grammar` for ``dis``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ..codecs import Decoder, decoder_for
from ..errors import AmbiguousFormatError, FormatError
from ..io.compression import decompress, is_zstd, read_seek_table
from ..io.mapping import parsing
from ..io.ranged import ByteSource, RangedSource
from ..io.seekable import DenseRecords, FrameDecoder, FrameSource, seek_table_of
from ..spec.detect import refuse_foreign, sniff_ascii
from ..spec.format import FORMATS, Format, get_format
from ..spec.limits import Limits, memory_errors_as_limits
from .index import IndexRecorder
from .reader import GraphReader

_T = TypeVar("_T")

# A binary file read by range (a file object without a descriptor, a URL) is parsed by windows,
# in Python, so that tensor data is stepped over rather than fetched. A file of records all the
# way (many small tensors) gains nothing from that: every byte is fetched anyway, and the Python
# parse is 20x slower than the compiled one (50,000 records, 19 MB, from a file object: 3.2 s
# by windows, 0.43 s read whole). So once the parse by windows has fetched DENSE_PROBE bytes,
# unless tensor data made up half of what it passed, a file of at most WHOLE_RECORDS_MAX
# bytes and at most WHOLE_FACTOR times the position reached is read whole (what the windows
# hold is not fetched again) and parsed as a buffer; otherwise it looks again each time the
# parse has fetched twice as much (see FrameDecoder). Above WHOLE_RECORDS_MAX the parse stays
# by windows: 66 MiB of records took 9.0 s there, against 0.8 s read whole, but the whole read
# would hold the file in memory, and a lazy handle is for files bigger than the memory one
# wants to give them.
DENSE_PROBE = 1 << 20
WHOLE_RECORDS_MAX = 64 << 20


@dataclass
class Plain:
    """A stream held in a buffer (the input, or a compressed input's plain bytes)."""

    buffer: Any
    start: int = 0
    compressed: bool = False

    @property
    def head(self) -> Any:
        return self.buffer

    def decoder(self, fmt: Format) -> Decoder:
        buffer = self.buffer
        if fmt.ascii and isinstance(buffer, (memoryview, bytearray)):
            buffer = self.buffer = bytes(buffer)  # the ascii scanner needs find() and re
        return decoder_for(fmt, buffer, self.start)

    def close(self) -> None:
        return None


@dataclass
class Framed:
    """A stream of binary records in a byte source (the frames of a seekable zstd stream, a
    file read by range): decoders fetch only what they read."""

    source: ByteSource
    start: int = 0
    compressed: bool = True
    whole_after: int | None = None  # see FrameDecoder: where a records-only stream gives up
    _decoders: list[FrameDecoder] = field(default_factory=list)
    _head: bytes | None = None

    @property
    def head(self) -> bytes:
        """The first bytes of the plain stream (for telling formats apart), read once."""
        if self._head is None:  # through the window (cache) the decoders read from
            size = min(self.source.size, 256)
            self._head = bytes(memoryview(self.source.window(0, size)[1])[:size]) if size else b""
        return self._head

    def decoder(self, fmt: Format) -> Decoder:
        self._decoders.append(
            FrameDecoder(self.source, fmt.long_size, whole_after=self.whole_after)
        )
        return self._decoders[-1]

    def close(self) -> None:
        """Release the decoders' sparse mappings (values read never point into them)."""
        for decoder in self._decoders:
            decoder.close()
        self._decoders.clear()


Input = Plain | Framed


def open_input(
    buffer: Any, start: int, limits: Limits, *, lazy: bool = False, format: str | None = None
) -> Input:
    """What ``buffer`` holds from ``start``: refused if it is another format, decompressed
    whole if it is zstd (bounded by ``max_decompressed``), or with ``lazy`` and a seek table
    around binary records (``format``, or what the first byte says), left compressed to be
    read frame by frame."""
    if not is_zstd(buffer, start):
        refuse_foreign(buffer, start)
        return Plain(buffer, start)
    view = memoryview(buffer).cast("B")[start:]
    entries = read_seek_table(view) if lazy else None
    if entries is not None:
        source = FrameSource(view, entries, max_size=limits.max_decompressed)
        framed = Framed(source)
        head = framed.head
        refuse_foreign(head, 0, source.size)
        ascii = get_format(format).ascii if format else bool(head) and sniff_ascii(head, 0)
        if not ascii:
            return framed  # ascii inside: decompressed whole below, like plain zstd
    plain = decompress(view, max_size=limits.max_decompressed)
    refuse_foreign(plain, 0)
    return Plain(plain, 0, compressed=True)


def detect(
    stream: Input, fmt: Format | None, attempt: Callable[[Decoder], _T]
) -> tuple[Format, _T, Decoder]:
    """Run ``attempt`` (a reading of one value) in ``fmt``, or in the format the input has.

    Ascii starts with a printed digit. For binary input both long sizes are tried; a reading
    that consumes the whole input wins, and when long size did not matter the result is the
    same either way. If both readings succeed and neither is exact, the input is ambiguous.
    """
    if fmt is None and sniff_ascii(stream.head, stream.start):
        fmt = FORMATS["ascii"]
    if fmt is not None:
        decoder = stream.decoder(fmt)
        return fmt, attempt(decoder), decoder
    readings: dict[str, tuple[Format, _T, Decoder]] = {}
    failures: dict[str, FormatError] = {}
    for candidate in (FORMATS["binary"], FORMATS["b32"]):
        decoder = stream.decoder(candidate)
        try:
            result = attempt(decoder)
        except FormatError as exc:
            failures[candidate.name] = exc
            continue
        if decoder.longs_read == 0 or decoder.remaining() == 0:
            return candidate, result, decoder  # explains every byte, or long size never mattered
        readings[candidate.name] = (candidate, result, decoder)
    if "binary" in readings and "b32" in readings:
        raise AmbiguousFormatError(
            "the input reads both as binary (8-byte longs) and as b32 (4-byte longs), each "
            "leaving bytes unread; pass format='binary' or format='b32'",
            readings["binary"][2].pos,
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


@dataclass(frozen=True)
class Reading:
    """One value read from a buffer: the value, the format it was read in, where it ended."""

    value: Any
    format: Format
    end: int
    buffer: Any  # what was read: the input, or its decompressed contents
    index: IndexRecorder | None = None  # where its tensors sit, when asked for
    source: ByteSource | None = None  # what its lazy tensors read from (frames, ranges), if any


def read_value(
    stream: Input, format: str | None, *, referenced: bool, limits: Limits, indexed: bool
) -> Reading:
    """One value of ``stream`` (its format given or detected), with its index if asked."""

    def attempt(decoder: Decoder) -> tuple[Any, IndexRecorder | None]:
        index = IndexRecorder() if indexed else None
        reader = GraphReader(
            decoder, referenced=referenced, limits=limits, index=index, keep_objects=False
        )
        return reader.read_object(), index

    fmt = get_format(format) if format is not None else None
    mapped = parsing(stream.buffer) if isinstance(stream, Plain) else nullcontext()
    with mapped, memory_errors_as_limits("reading the input"):
        found, (value, index), decoder = detect(stream, fmt, attempt)
    buffer = stream.buffer if isinstance(stream, Plain) else stream.head
    return Reading(value, found, decoder.pos, buffer, index)


@memory_errors_as_limits("reading the input")
def read_buffer(
    buffer: Any,
    start: int,
    format: str | None,
    *,
    referenced: bool,
    limits: Limits,
    indexed: bool = False,
    lazy: bool = False,
) -> Reading:
    """One value from ``buffer``: unwrapped from zstd if compressed, then read or detected.

    ``indexed``: the reading carries the tensor index, recorded while reading. ``lazy``: a
    seekable zstd input of binary records is parsed frame by frame, decompressing only the
    frames of its records; its tensors and storages come back as :mod:`~streamser.values.lazy`
    placeholders reading from :attr:`Reading.source`.
    """
    with closing(open_input(buffer, start, limits, lazy=lazy, format=format)) as stream:
        reading = read_value(stream, format, referenced=referenced, limits=limits, indexed=indexed)
    if isinstance(stream, Framed):
        return replace(reading, source=stream.source)
    return reading


@contextmanager
def closing(stream: Input) -> Iterator[Input]:
    try:
        yield stream
    finally:
        stream.close()


@memory_errors_as_limits("reading the input")
def read_ranged(
    source: RangedSource,
    format: str | None,
    *,
    referenced: bool,
    limits: Limits,
    indexed: bool = False,
) -> tuple[Reading, bool]:
    """One value from a file read by range (a file object, a URL), and whether it was
    compressed.

    A binary file, plain or seekable zstd, is parsed lazily: only its records are fetched, and
    tensors come back as placeholders reading from :attr:`Reading.source` (the file itself, or
    its frames). Ascii files, zstd files without a seek table and plain files of at most
    :data:`WHOLE_RECORDS_MAX` bytes that turn out to be records with little tensor data between
    them are read whole, as ``load`` does; :attr:`Reading.source` is then None.
    """
    _, head = source.window(0, 4)
    compressed = is_zstd(head)
    plain = _plain_stream(source, compressed, limits)
    if plain is not None:
        dense_check = not compressed and plain.size <= WHOLE_RECORDS_MAX
        stream = Framed(
            plain, compressed=compressed, whole_after=DENSE_PROBE if dense_check else None
        )
        refuse_foreign(stream.head, 0, plain.size)
        fmt = get_format(format) if format is not None else None
        if not (
            fmt.ascii if fmt is not None else bool(stream.head) and sniff_ascii(stream.head, 0)
        ):
            try:
                with closing(stream):
                    reading = read_value(
                        stream, format, referenced=referenced, limits=limits, indexed=indexed
                    )
                return replace(reading, source=plain), compressed
            except DenseRecords:
                pass  # records all the way: read whole, below
    whole = read_buffer(
        source.read_all(), 0, format, referenced=referenced, limits=limits, indexed=indexed
    )
    return whole, compressed


def _plain_stream(source: RangedSource, compressed: bool, limits: Limits) -> ByteSource | None:
    """The plain stream of a ranged file: itself, its frames, or None (zstd, no seek table)."""
    if not compressed:
        return source
    entries = seek_table_of(source)
    if entries is None:
        return None
    return FrameSource(source, entries, max_size=limits.max_decompressed)
