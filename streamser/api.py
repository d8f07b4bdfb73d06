"""The four verbs of Torch7: ``load``, ``save``, ``serialize``, ``deserialize``.

``save`` is atomic: it writes a temporary file beside the target, flushes and fsyncs it, then
renames it over the target, so a failure at any point leaves the old file whole (and never
truncates a file that may be memory-mapped by an earlier ``load``). Otherwise it behaves as
``open(path, "wb")`` would: see :mod:`streamser.io.atomic`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import StreamserError, UnsupportedValueError
from .io.sink import writer_for
from .types import CastSpec, Compression, FormatName, SerialMode

# The reader, the writer, the format tables and the ways in and out (paths, URLs) are imported
# on first use: ``import streamser`` then costs little more than ``import numpy`` (each later
# call finds them in sys.modules).
if TYPE_CHECKING:
    from .io.compression import SeekableZstdWriter

PathLike = str | os.PathLike[str]


def load(
    source: PathLike | BinaryIO,
    format: FormatName | None = None,
    referenced: bool = True,
    *,
    mmap: bool = True,
    populate: bool = False,
    threads: int | None = None,
    storage_options: dict[str, Any] | None = None,
    block_size: int | None = None,
    max_concurrency: int | None = None,
    **limits: int,
) -> Any:
    """Read one value from a ``.t7`` file (a path, a URL or a binary file object).

    ``format`` is ``"binary"``, ``"b64"``, ``"b32"`` or ``"ascii"``; None detects it. With
    ``mmap`` (the default) tensors of binary files are copy-on-write views of a mapping of the
    file: nothing of their data is read until touched, and writing to them never changes the
    file; ``populate=True`` faults the whole mapping in at once, in parallel, for callers that
    will touch every tensor. The views outlive the file being deleted or replaced by a rename
    (as ``save`` replaces it), but they show the new bytes if another program rewrites the file
    in place, and touching them after it truncates the file is SIGBUS. ``mmap=False`` reads the
    file into private memory at once, immune to all of that, a big file by several threads at
    once. ``threads`` bounds those threads (None: ``STREAMSER_THREADS`` or up to 4; 1: none;
    files under 32 MiB are read by the calling thread alone). zstd-compressed files are
    recognised by their magic number and decompressed into memory (at most
    ``max_decompressed`` bytes: by default half of what the process can still allocate).
    ``limits`` override the bounds of :class:`~streamser.spec.limits.Limits` (``max_depth``,
    ``max_string``, ``max_table``, ``max_objects``, ``max_decompressed``).

    A URL (``s3://``, ``gs://``, ``https://``, ``memory://``: any fsspec protocol, with
    ``storage_options``) and a file object that cannot be mapped are read into one buffer by
    parallel range requests (``block_size``, ``max_concurrency``: see :func:`streamser.open`).
    """
    from .graph.loading import read_buffer
    from .io.inputs import input_buffer
    from .io.ranged import RangeOptions
    from .spec.limits import Limits

    bounds = Limits.from_keywords(**limits)
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise StreamserError(
            f"load() takes a path (str or os.PathLike) or a binary file object, not "
            f"{type(source).__name__}: bytes are data, not a path; read serialized bytes with "
            "streamser.deserialize(data), and give a path as str (os.fsdecode(path))"
        )
    buffer, start = input_buffer(
        source,
        mmap=mmap,
        threads=threads,
        populate=populate,
        storage_options=storage_options,
        options=RangeOptions.of(block_size, max_concurrency),
    )
    return read_buffer(buffer, start, format, referenced=referenced, limits=bounds).value


def deserialize(
    data: bytes | bytearray | memoryview,
    format: FormatName | None = None,
    referenced: bool = True,
    **limits: int,
) -> Any:
    """Read one value from the bytes ``serialize`` (or ``torch.serialize``) produced.

    Binary tensors are zero-copy views of ``data`` (read-only when ``data`` is ``bytes``);
    zstd-compressed data is recognised by its magic number. ``limits`` as for :func:`load`.
    """
    from .graph.loading import read_buffer
    from .spec.limits import Limits

    bounds = Limits.from_keywords(**limits)
    return read_buffer(data, 0, format, referenced=referenced, limits=bounds).value


def serialize(
    value: Any,
    format: FormatName = "binary",
    referenced: bool = True,
    *,
    compact: bool = False,
    serial: SerialMode = "heavy",
    hook: Callable[[Any], Any] | None = None,
    cast: CastSpec | None = None,
    compress: Compression | None = None,
    level: int = 3,
    threads: int | None = None,
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
    format: FormatName = "binary",
    referenced: bool = True,
    *,
    compress: Compression | None = None,
    level: int = 3,
    threads: int | None = None,
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
    format: FormatName = "binary",
    referenced: bool = True,
    *,
    compact: bool = False,
    serial: SerialMode = "heavy",
    hook: Callable[[Any], Any] | None = None,
    cast: CastSpec | None = None,
    compress: Compression | None = None,
    level: int = 3,
    threads: int | None = None,
    storage_options: dict[str, Any] | None = None,
    part_size: int | None = None,
    max_concurrency: int | None = None,
) -> None:
    """Write ``value`` as a ``.t7`` file (``format``: binary, ascii, b32 or b64).

    A path is written atomically (temporary file, fsync, rename); on any error the old file is
    left as it was and the temporary file is removed. Symbolic links are followed and the
    replaced file's mode, owner and group kept; what ``open(path, "wb")`` refuses is refused
    with the same error. A file object is written in place. A URL is uploaded as it is
    written, in bounded memory, and replaces the object only once complete: on S3 by a
    multipart upload of ``part_size`` parts (8 MiB), ``max_concurrency`` (4) of them in
    flight, aborted on error; elsewhere under a temporary name, then moved (see
    :mod:`streamser.io.upload`). ``storage_options`` go to fsspec.

    ``compact=True`` writes every partial or strided view as its own storage instead of the
    whole storage it views. ``serial`` ("heavy", "medium", "light") strips nn modules as dpnn's
    ``nn.Serial`` does; ``hook`` replaces values as they are written; ``cast`` writes tensors
    as other classes ("cpu", "float32", or a mapping of class names). The caller's objects are
    never changed. ``compress="zstd"`` wraps the exact bytes in the seekable zstd format
    (``level``; ``threads`` frames compressed at once); ``zstd -d`` restores the plain file.
    ``threads=None`` means ``STREAMSER_THREADS`` or up to 4. (An uncompressed save is written by
    one thread: Linux serialises buffered writes to one file, see :mod:`streamser.io.parallel`.)
    """
    from .spec.format import get_format

    get_format(format)
    _check_target(target, value)
    options: dict[str, Any] = {"compact": compact, "serial": serial, "hook": hook, "cast": cast}
    if not isinstance(target, (str, os.PathLike)):
        sink: Any = target
        if compress is not None:
            sink = _compressor(compress, writer_for(target), level, threads)
        _write_through(sink, value, format, referenced, options)
        return
    with _replacing(target, storage_options, part_size, max_concurrency) as raw:
        sink = raw
        if compress is not None:
            sink = _compressor(compress, writer_for(raw), level, threads)
        _write_through(sink, value, format, referenced, options)


def _replacing(
    target: PathLike,
    storage_options: dict[str, Any] | None,
    part_size: int | None,
    max_concurrency: int | None,
) -> AbstractContextManager[Any]:
    """The atomic way to write ``target``: a temporary file and a rename for a local path, an
    upload that completes only on success for a URL."""
    from .io.atomic import replacing
    from .io.inputs import is_path, path_of

    if is_path(target):
        return replacing(path_of(target))
    from .io.upload import uploading  # the remote extra, only now

    return uploading(
        str(target),
        storage_options,
        part_size=part_size,
        max_concurrency=max_concurrency,
    )


def _check_target(target: Any, value: Any) -> None:
    """A path or something with ``write``; anything else is a mistake worth naming."""
    if isinstance(target, (str, os.PathLike)) or callable(getattr(target, "write", None)):
        return
    swapped = isinstance(value, (str, os.PathLike))
    hint = ": the arguments look swapped, it is streamser.save(path, value)" if swapped else ""
    raise UnsupportedValueError(
        f"save() writes to a path (str or os.PathLike) or a binary file object, not to a "
        f"{type(target).__name__}{hint}"
    )


def _compressor(
    compress: str, write: Callable[[Any], object], level: int, threads: int | None
) -> SeekableZstdWriter:
    if compress != "zstd":
        raise ValueError(f"compress must be None or 'zstd', not {compress!r}")
    from .io.compression import SeekableZstdWriter
    from .io.parallel import resolve_threads

    return SeekableZstdWriter(write, level=level, threads=resolve_threads(threads))


def _write_through(
    target: Any, value: Any, format: FormatName, referenced: bool, options: dict[str, Any]
) -> None:
    """Write ``value`` to ``target``; a compressor is closed (seek table) only on success."""
    from .io.compression import SeekableZstdWriter
    from .streams import Writer

    try:
        with Writer(target, format, referenced=referenced, **options) as writer:
            writer.write_object(value)
    except BaseException:
        if isinstance(target, SeekableZstdWriter):
            target.abort()
        raise
    if isinstance(target, SeekableZstdWriter):
        target.close()
