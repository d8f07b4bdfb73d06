"""The four verbs of Torch7: ``load``, ``save``, ``serialize``, ``deserialize``.

``save`` is atomic: it writes a temporary file beside the target, flushes and fsyncs it, then
renames it over the target, so a failure at any point leaves the old file whole (and never
truncates a file that may be memory-mapped by an earlier ``load``). Otherwise it behaves as
``open(path, "wb")`` would: see :mod:`streamser.io.atomic`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from .graph.loading import read_buffer
from .io.atomic import replacing
from .io.compression import SeekableZstdWriter
from .io.mapping import buffer_of
from .io.sink import writer_for
from .spec.format import get_format
from .spec.limits import Limits
from .streams import Writer

PathLike = str | os.PathLike[str]


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
    file. The views outlive the file being deleted or replaced by a rename (as ``save``
    replaces it), but they show the new bytes if another program rewrites the file in place,
    and touching them after it truncates the file is SIGBUS. ``mmap=False`` reads the file into
    private memory at once, immune to all of that. zstd-compressed files are recognised by
    their magic number and decompressed into memory (at most ``max_decompressed`` bytes: by
    default half of what the process can still allocate).
    ``limits`` override the bounds of :class:`~streamser.spec.limits.Limits` (``max_depth``,
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
    left as it was and the temporary file is removed. Symbolic links are followed and the
    replaced file's mode, owner and group kept; what ``open(path, "wb")`` refuses is refused
    with the same error. A file object is written in place.

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
    with replacing(Path(target)) as raw:
        sink = raw
        if compress is not None:
            sink = _compressor(compress, writer_for(raw), level, threads)
        _write_through(sink, value, format, referenced, options)


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
