"""``Reader`` and ``Writer``: several values in one stream, like Torch7's ``torch.File``.

A reader works over one buffer: a private copy-on-write mapping of a regular file (tensor data is
then read only when touched), the bytes of anything else. It keeps the file object's position in
step after every call, so reads can be mixed with other uses of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .codecs import decoder_for, encoder_for
from .graph.reader import GraphReader
from .graph.writer import GraphWriter
from .io.mapping import _seekable, buffer_of, parsing
from .io.preallocate import claimer_for
from .io.sink import Sink, WriteTarget, kernel_copy_target, writer_for
from .spec.detect import sniff_ascii
from .spec.format import FORMATS, Format, get_format
from .spec.grammar import decode_string
from .spec.limits import Limits
from .tools.cast import cast_hook, resolve_cast
from .tools.serial import serial_hook
from .types import CastSpec, FormatName, SerialMode
from .values.lua import TableStream


def _chain(*hooks: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """The given hooks applied in order, as one hook (None when there are none)."""
    steps = [hook for hook in hooks if hook is not None]
    if len(steps) <= 1:
        return steps[0] if steps else None

    def chained(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chained


class Reader:
    """Reads values one after another from a file object or a bytes-like object.

    ``format`` is ``"binary"`` (the default, as in Torch7), ``"b32"``, ``"b64"``, ``"ascii"``, or
    None to tell ascii from binary by the first byte. Indexed objects are remembered across calls,
    so a back-reference in a later value resolves to the object read earlier.
    """

    def __init__(
        self,
        source: Any,
        format: FormatName | None = "binary",
        *,
        referenced: bool = True,
        mmap: bool = True,
        **limits: int,
    ) -> None:
        buffer, start, self._origin = buffer_of(source, mmap=mmap)
        self._file = None if isinstance(source, (bytes, bytearray, memoryview)) else source
        if format is None:
            fmt = FORMATS["ascii" if sniff_ascii(buffer, start) else "binary"]
        else:
            fmt = get_format(format)
        if fmt.ascii and isinstance(buffer, memoryview):
            buffer = buffer.tobytes()
        self.format: Format = fmt
        self._decoder_buffer = buffer
        self._decoder = decoder_for(fmt, buffer, start)
        bounds = Limits.from_keywords(**limits)
        self._graph = GraphReader(self._decoder, referenced=referenced, limits=bounds)

    @property
    def position(self) -> int:
        """Bytes of the input consumed so far."""
        return self._decoder.pos

    def _sync(self) -> None:
        if self._file is not None and _seekable(self._file):
            self._file.seek(self._origin + self._decoder.pos)

    def at_end(self) -> bool:
        """True when nothing is left to read."""
        return self._decoder.remaining() <= 0

    def read_object(self) -> Any:
        """The next value, as ``File:readObject``; back-references may reach earlier values."""
        try:
            with parsing(self._decoder_buffer):
                return self._graph.read_object()
        finally:
            self._sync()

    def read_int(self) -> int:
        """The next 4-byte integer, as ``File:readInt``."""
        try:
            return self._decoder.read_int()
        finally:
            self._sync()

    def read_long(self) -> int:
        """The next C long (8 bytes, 4 in ``b32``), as ``File:readLong``."""
        try:
            return self._decoder.read_long()
        finally:
            self._sync()

    def read_double(self) -> float:
        """The next double, as ``File:readDouble``."""
        try:
            return self._decoder.read_double()
        finally:
            self._sync()

    def read_bool(self) -> bool:
        """The next boolean (an integer, 1 for true), as ``File:readBool``."""
        return self.read_int() == 1

    def read_string(self) -> str | bytes:
        """A length-prefixed string, as ``File:readString`` after ``writeInt(#s)`` would give."""
        try:
            return decode_string(self._decoder.read_raw(self._decoder.read_int()))
        finally:
            self._sync()


class Writer:
    """Writes values one after another to a binary file object.

    Small records are gathered in a bounded buffer; call :meth:`flush` (or use the writer as a
    context manager) to push them to the file. ``serial`` ("heavy", "medium", "light") strips nn
    modules while writing (see :mod:`streamser.tools.serial`); ``hook(value)`` may return a value to
    write in place of ``value`` (sharing stays keyed on the original, as in Torch7's
    ``writeObject``); ``cast`` writes tensors as other classes (see
    :func:`streamser.tools.cast.resolve_cast`). None of them changes the caller's objects.
    """

    def __init__(
        self,
        fileobj: WriteTarget,
        format: FormatName = "binary",
        *,
        referenced: bool = True,
        compact: bool = False,
        serial: SerialMode = "heavy",
        hook: Callable[[Any], Any] | None = None,
        cast: CastSpec | None = None,
        buffer_size: int = 1 << 20,
    ) -> None:
        self.format: Format = get_format(format)
        self._file = fileobj
        self._sink = Sink(
            writer_for(fileobj), buffer_size, kernel_copy_target(fileobj), claimer_for(fileobj)
        )
        self._encoder = encoder_for(self.format, self._sink)
        self._serial = serial_hook(serial)
        self._graph = GraphWriter(
            self._encoder,
            referenced=referenced,
            compact=compact,
            hook=_chain(hook, self._serial, cast_hook(cast)),
            cast=resolve_cast(cast),
        )

    @property
    def bytes_written(self) -> int:
        """Bytes accepted so far, including those still in the buffer."""
        return self._sink.written

    def write_object(self, value: Any) -> None:
        """Write ``value`` and all it holds, as ``File:writeObject``."""
        if self._serial is not None:
            self._serial.prepare(value)  # what the mode clears is found before writing
        self._graph.write_object(value)

    def write_table(self, length: int, items: Iterable[tuple[Any, Any]]) -> None:
        """Write a table of ``length`` entries taken one at a time from ``items``.

        Values are written as they arrive, so a checkpoint's tensors can be produced (loaded,
        computed) one at a time; objects they share with earlier values are still written as
        back-references.
        """
        self.write_object(TableStream(length, items))

    def write_int(self, value: int) -> None:
        """Write a 4-byte integer, as ``File:writeInt``."""
        self._encoder.write_int(int(value))
        self._encoder.settle()

    def write_long(self, value: int) -> None:
        """Write a C long (8 bytes, 4 in ``b32``), as ``File:writeLong``."""
        self._encoder.write_long(int(value))
        self._encoder.settle()

    def write_double(self, value: float) -> None:
        """Write a double, as ``File:writeDouble``."""
        self._encoder.write_double(float(value))
        self._encoder.settle()

    def write_bool(self, value: bool) -> None:
        """Write a boolean (an integer, 1 for true), as ``File:writeBool``."""
        self._encoder.write_int(1 if value else 0)
        self._encoder.settle()

    def write_string(self, value: str | bytes) -> None:
        """Write a length-prefixed string (UTF-8 for ``str``), read back by ``read_string``."""
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        self._encoder.write_int(len(data))
        self._encoder.write_raw(data)
        self._encoder.settle()

    def flush(self) -> None:
        """Push the buffered records to the file object and flush it."""
        self._sink.drain()
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
