"""Where a checkpoint's bytes come from: a path, a file object or a URL, told apart once.

* A local path (or a ``file://`` URL) and a file object with a usable descriptor are mapped
  (:mod:`.mapping`): tensors are views of the file, read by the kernel when touched.
* Any other readable, seekable file object (``BytesIO``, an fsspec file, a wrapper) and any
  other URL (``s3://``, ``gs://``, ``http(s)://``, ``memory://``: any fsspec protocol) are read
  by range (:class:`~.ranged.RangedSource`): ``open`` parses the records and reads tensors when
  asked for, ``load`` reads the whole file into one buffer in parallel pieces.
* A stream that cannot seek (a pipe, an HTTP response) is read whole.

fsspec is imported (by :mod:`.remote`) only when a URL or an fsspec file is actually used.
"""

from __future__ import annotations

import io
import mmap as _mmap
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from ..spec.limits import out_of_memory, refused_memory
from .mapping import _seekable, buffer_of
from .ranged import FileFetcher, RangedSource, RangeOptions, file_size, read_some

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+://")  # two letters at least: not "C:\..."


def is_url(target: object) -> bool:
    """Whether ``target`` is a URL string (``scheme://...``) rather than a local path."""
    return isinstance(target, str) and _URL.match(target) is not None


def local_path(url: str) -> str | None:
    """The local path of a ``file://`` (or ``local://``) URL; None for any other URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("file", "local") or parts.netloc not in ("", "localhost"):
        return None
    return url2pathname(parts.path) if sys.platform == "win32" else unquote(parts.path)


def is_path(target: object) -> bool:
    """A local file named by a path or a ``file://`` URL (read through a mapping)."""
    if isinstance(target, os.PathLike):
        return True
    return isinstance(target, str) and (not is_url(target) or local_path(target) is not None)


def path_of(target: str | os.PathLike[str]) -> Path:
    """The path of a local target given as a path or a ``file://`` URL."""
    if isinstance(target, str) and is_url(target):
        found = local_path(target)
        if found is not None:
            return Path(found)
    return Path(target)


def name_of(source: Any) -> str:
    """How a source is named in messages: its path, URL, or file name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None) or getattr(source, "path", None)
    return str(name) if name is not None else f"<{type(source).__name__}>"


def ranged_input(
    source: Any, *, storage_options: dict[str, Any] | None, options: RangeOptions
) -> RangedSource | None:
    """A :class:`RangedSource` for a URL or an unmappable seekable file object; None for what
    is better mapped (paths, regular files) or read whole (streams that cannot seek)."""
    if is_path(source) or isinstance(source, (bytes, bytearray, memoryview)):
        return None  # mapped, or in memory already
    if isinstance(source, str):
        from .remote import open_url  # the remote extra, only now

        return open_url(source, storage_options, options)
    if storage_options:
        raise TypeError("storage_options apply to URLs, not to file objects")
    if _has_file_descriptor(source) or not _readable_seekable(source):
        return None
    if _from_fsspec(source):
        from .remote import open_fsspec_file

        return open_fsspec_file(source, options)
    base = source.tell()
    return RangedSource(FileFetcher(source, base), file_size(source), options, name_of(source))


def input_buffer(
    source: Any,
    *,
    mmap: bool,
    storage_options: dict[str, Any] | None,
    options: RangeOptions,
    threads: int | None = None,
    populate: bool = False,
) -> tuple[Any, int]:
    """``(buffer, start)`` holding a whole input for ``load``: mapped, read by parallel ranges
    into one buffer (URLs, fsspec files, other seekable objects), or read whole (streams).
    ``threads`` and ``populate`` are for local files (see :func:`.mapping.buffer_of`)."""
    local: dict[str, Any] = {"mmap": mmap, "threads": threads, "populate": populate}
    if isinstance(source, io.BytesIO) and not storage_options:
        return whole_input(source, **local)
    ranged = ranged_input(source, storage_options=storage_options, options=options)
    if ranged is None:
        return whole_input(source, **local)
    try:
        return ranged.read_all(), 0
    finally:
        ranged.close()


def whole_input(
    source: Any, *, mmap: bool, threads: int | None = None, populate: bool = False
) -> tuple[Any, int]:
    """``(buffer, start)`` of a local file (mapped unless ``mmap`` is False), of a file object
    with a descriptor (mapped the same way), or of a stream read to its end."""
    local: dict[str, Any] = {"mmap": mmap, "threads": threads, "populate": populate}
    if is_path(source):
        with open(path_of(source), "rb") as fileobj:
            buffer, start, _ = buffer_of(fileobj, **local)
        return buffer, start
    if not isinstance(source, io.BytesIO) and not _has_file_descriptor(source):
        streamed = read_stream(source)
        if streamed is not None:
            return streamed, 0
    buffer, start, _ = buffer_of(source, **local)
    return buffer, start


def read_stream(fileobj: Any, first: int = 1 << 20) -> Any | None:
    """A stream read to its end into one anonymous mapping that grows in place (``mremap``),
    so that memory stays near the data's size, never twice it; None where mappings cannot
    grow (the caller reads the stream its own way)."""
    if not hasattr(fileobj, "read"):
        return None
    try:
        buffer = _mmap.mmap(-1, first, flags=_mmap.MAP_PRIVATE)  # shared ones cannot grow
        buffer.resize(first)
    except (OSError, SystemError, ValueError, TypeError):
        return None
    done = 0
    while True:
        if done == len(buffer):
            try:
                buffer.resize(2 * done)
            except (OSError, MemoryError) as exc:
                if not refused_memory(exc):
                    raise
                buffer.close()
                raise out_of_memory("reading the stream into memory", done) from None
        with memoryview(buffer) as whole, whole[done:] as view:
            count = read_some(fileobj, view)
        if not count:
            break
        done += count
    if done == 0:
        buffer.close()
        return b""
    buffer.resize(done)
    return buffer


def _has_file_descriptor(fileobj: Any) -> bool:
    """Whether the object is a regular file the kernel can map."""
    try:
        return stat.S_ISREG(os.fstat(fileobj.fileno()).st_mode)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _readable_seekable(fileobj: Any) -> bool:
    if not hasattr(fileobj, "read"):
        raise TypeError(
            f"expected a path, a URL or a binary file object, not {type(fileobj).__name__}"
        )
    return _seekable(fileobj)


def _from_fsspec(fileobj: Any) -> bool:
    """An fsspec file: fsspec is imported only for objects that carry a filesystem."""
    if not (hasattr(fileobj, "fs") and hasattr(fileobj, "path")):
        return False
    from .remote import is_fsspec_file

    return is_fsspec_file(fileobj)


__all__ = [
    "input_buffer",
    "is_path",
    "is_url",
    "local_path",
    "name_of",
    "path_of",
    "ranged_input",
    "whole_input",
]
