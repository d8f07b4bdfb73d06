"""The four verbs of Torch7: ``load``, ``save``, ``serialize``, ``deserialize``.

``save`` is atomic: it writes a temporary file beside the target, flushes and fsyncs it, then
renames it over the target, so a failure at any point leaves the old file whole (and never
truncates a file that may be memory-mapped by an earlier ``load``).
"""

from __future__ import annotations

import glob
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from .codecs import BinaryDecoder, decoder_for
from .compression import SeekableZstdWriter, decompress, is_zstd, read_seek_table
from .errors import AmbiguousFormatError, FormatError
from .format import FORMATS, Format, get_format
from .graph_reader import GraphReader, Limits
from .seekable import FrameDecoder, FrameSource
from .sink import writer_for
from .streams import Writer, buffer_of, parsing, sniff_ascii
from .writeback import WriteBehindFile

PathLike = str | os.PathLike[str]
TEMP_SUFFIX = ".streamser-tmp"


def load(
    source: PathLike | BinaryIO,
    format: str | None = None,
    referenced: bool = True,
    *,
    mmap: bool = True,
    **limits: int,
) -> Any:
    """Read one value from a ``.t7`` file (a path or a binary file object).

    ``format`` is ``"binary"``, ``"b64"``, ``"b32"`` or ``"ascii"``; None detects it. With
    ``mmap`` (the default) tensors of binary files are copy-on-write views of a mapping of the
    file: nothing of their data is read until touched, and writing to them never changes the
    file. ``mmap=False`` reads the file into memory. zstd-compressed files are recognised by
    their magic number and decompressed (into memory, at most ``max_decompressed`` bytes).
    ``limits`` override the bounds of :class:`~streamser.graph_reader.Limits` (``max_depth``,
    ``max_string``, ``max_table``, ``max_objects``, ``max_decompressed``).
    """
    bounds = Limits.from_keywords(**limits)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fileobj:
            buffer, start, _ = buffer_of(fileobj, mmap=mmap)
    else:
        buffer, start, _ = buffer_of(source, mmap=mmap)
    return read_buffer(buffer, start, format, referenced=referenced, limits=bounds).value


def deserialize(
    data: bytes | bytearray | memoryview,
    format: str | None = None,
    referenced: bool = True,
    **limits: int,
) -> Any:
    """Read one value from the bytes ``serialize`` (or ``torch.serialize``) produced.

    Binary tensors are zero-copy views of ``data`` (read-only when ``data`` is ``bytes``);
    zstd-compressed data is recognised by its magic number. ``limits`` as for :func:`load`.
    """
    bounds = Limits.from_keywords(**limits)
    return read_buffer(data, 0, format, referenced=referenced, limits=bounds).value


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


def read_lazily(
    buffer: Any, start: int, format: str | None, *, referenced: bool, limits: Limits
) -> tuple[Reading, FrameSource] | None:
    """One value from a seekable zstd input, decompressing only the frames of its records.

    Tensors and storages come back as :mod:`~streamser.lazy` placeholders reading from the
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


def serialize(
    value: Any,
    format: str = "binary",
    referenced: bool = True,
    *,
    compact: bool = False,
    serial: str = "heavy",
    hook: Callable[[Any], Any] | None = None,
    cast: str | Mapping[str, str] | None = None,
    compress: str | None = None,
    level: int = 3,
    threads: int = 1,
) -> bytes:
    """The bytes ``save`` would write, as ``torch.serialize`` returns them.

    Records are gathered in bounded blocks and tensor data is referenced where it lies, then
    everything is joined once: each byte is copied into the result exactly one time.
    """
    options: dict[str, Any] = {"compact": compact, "serial": serial, "hook": hook, "cast": cast}
    pieces = serialize_pieces(
        value, format, referenced, compress=compress, level=level, threads=threads, **options
    )
    return b"".join(pieces)


def serialize_pieces(
    value: Any,
    format: str = "binary",
    referenced: bool = True,
    *,
    compress: str | None = None,
    level: int = 3,
    threads: int = 1,
    **options: Any,
) -> list[Any]:
    """The serialized bytes as a list of blocks and views of array memory, not yet joined."""
    pieces: list[Any] = []
    target: Any = _PieceCollector(pieces)
    if compress is not None:
        target = _compressor(compress, pieces.append, level, threads)
    _write_through(target, value, format, referenced, options)
    return pieces


class _PieceCollector:
    """A write target that keeps what it is given (blocks, views of arrays) for one join."""

    def __init__(self, pieces: list[Any]) -> None:
        self.write = pieces.append


def save(
    target: PathLike | BinaryIO,
    value: Any,
    format: str = "binary",
    referenced: bool = True,
    *,
    compact: bool = False,
    serial: str = "heavy",
    hook: Callable[[Any], Any] | None = None,
    cast: str | Mapping[str, str] | None = None,
    compress: str | None = None,
    level: int = 3,
    threads: int = 1,
) -> None:
    """Write ``value`` as a ``.t7`` file (``format``: binary, ascii, b32 or b64).

    A path is written atomically (temporary file, fsync, rename); on any error the old file is
    left as it was and the temporary file is removed. A file object is written in place.

    ``compact=True`` writes every partial or strided view as its own storage instead of the
    whole storage it views. ``serial`` ("heavy", "medium", "light") strips nn modules as dpnn's
    ``nn.Serial`` does; ``hook`` replaces values as they are written; ``cast`` writes tensors
    as other classes ("cpu", "float32", or a mapping of class names). The caller's objects are
    never changed. ``compress="zstd"`` wraps the exact bytes in the seekable zstd format
    (``level``; ``threads`` frames compressed at once); ``zstd -d`` restores the plain file.
    """
    get_format(format)
    options: dict[str, Any] = {"compact": compact, "serial": serial, "hook": hook, "cast": cast}
    if not isinstance(target, (str, os.PathLike)):
        sink: Any = target
        if compress is not None:
            sink = _compressor(compress, writer_for(target), level, threads)
        _write_through(sink, value, format, referenced, options)
        return
    path = Path(target)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with WriteBehindFile(fd) as raw:
            sink = raw
            if compress is not None:
                sink = _compressor(compress, writer_for(raw), level, threads)
            _write_through(sink, value, format, referenced, options)
            os.fsync(raw.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    remove_stale_temporaries(path)


def _compressor(
    compress: str, write: Callable[[Any], object], level: int, threads: int
) -> SeekableZstdWriter:
    if compress != "zstd":
        raise ValueError(f"compress must be None or 'zstd', not {compress!r}")
    return SeekableZstdWriter(write, level=level, threads=threads)


def _write_through(
    target: Any, value: Any, format: str, referenced: bool, options: dict[str, Any]
) -> None:
    """Write ``value`` to ``target``; a compressor is closed (seek table) only on success."""
    try:
        with Writer(target, format, referenced=referenced, **options) as writer:
            writer.write_object(value)
    except BaseException:
        if isinstance(target, SeekableZstdWriter):
            target.abort()
        raise
    if isinstance(target, SeekableZstdWriter):
        target.close()


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of earlier saves to ``path`` whose process died (a kill mid-save).

    Temporaries are named ``.<name>.<pid>-<random>.streamser-tmp``; one whose process is alive
    belongs to a save still running and is left alone.
    """
    removed = []
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*{TEMP_SUFFIX}"):
        pid_text = candidate.name[len(prefix) : -len(TEMP_SUFFIX)].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or we cannot tell: keep its file
    return True


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
