"""Reading every tensor's data once, by storage, in time and memory bounded by the file.

A tensor is a view (sizes, strides, offset) of a storage, and a view may show each element many
times (a stride-0 expansion of 2^40 elements over one float). Its geometry was already checked
against its storage when the file was parsed; what is left is to read the data, and the data is
the storage's: each storage is read once, over the elements its tensors reach, in bounded
chunks, never through an expanded view. Floating data is also checked for NaN and infinities
(reported, not an error: weights can hold them on purpose).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..handle import T7File
from ..io.arrays import address_of, iter_chunks, root_of
from ..values.lazy import LazyArray, LazyStorage

CHUNK_BYTES = 16 << 20  # the most of one storage checked at once

Array = np.ndarray[Any, Any]


@dataclass
class ValueReport:
    """What :func:`read_values` read."""

    tensors: int = 0
    nbytes: int = 0  # bytes of storage data read
    nonfinite: list[str] = field(default_factory=list)  # a path to each storage with NaN or inf


@dataclass
class _Span:
    """The elements of one storage that its tensors reach, as a byte range of the storage."""

    root: Array
    dtype: np.dtype[Any]
    first: int
    end: int
    path: str


@dataclass
class _LazySpan:
    """The elements of one lazily read storage (compressed, or read by range) that its
    tensors reach, as element indices: read from the file a chunk at a time."""

    storage: LazyStorage
    first: int
    end: int
    path: str


def read_values(handle: T7File) -> ValueReport:
    """Read the data of every tensor of ``handle`` once per storage, and check floats."""
    report = ValueReport()
    spans: dict[tuple[int, str], _Span] = {}
    lazy: dict[int, _LazySpan] = {}
    for path, array in handle.arrays(read=False):
        report.tensors += 1
        if not array.size:
            continue
        if isinstance(array, LazyArray):
            _reach_lazily(lazy, path, array)
        else:
            _reach(spans, path, array)
    for span in spans.values():
        report.nbytes += span.end - span.first
        if not _all_finite(_elements(span)):
            report.nonfinite.append(span.path)
    for later in lazy.values():
        storage = later.storage
        report.nbytes += (later.end - later.first) * storage.file_dtype.itemsize
        if not _all_finite(storage.chunks(CHUNK_BYTES, later.first, later.end)):
            report.nonfinite.append(later.path)
    return report


def byte_span(array: Array) -> tuple[int, int]:
    """(first, end) bytes of ``array``'s root that ``array`` reaches (it is not empty)."""
    start = address_of(array) - address_of(root_of(array))
    low = sum(min(0, (n - 1) * s) for n, s in zip(array.shape, array.strides, strict=True))
    high = sum(max(0, (n - 1) * s) for n, s in zip(array.shape, array.strides, strict=True))
    return start + low, start + high + array.itemsize


def _reach(spans: dict[tuple[int, str], _Span], path: str, array: Array) -> None:
    root = root_of(array)
    first, end = byte_span(array)
    key = (id(root), array.dtype.str)  # the span holds the root, so its id stays its own
    span = spans.get(key)
    if span is None:
        spans[key] = _Span(root, array.dtype, first, end, path)
    else:
        span.first, span.end = min(span.first, first), max(span.end, end)


def _reach_lazily(spans: dict[int, _LazySpan], path: str, array: LazyArray) -> None:
    first, end = array.span()
    key = id(array.storage)  # the span holds the storage, so its id stays its own
    span = spans.get(key)
    if span is None:
        spans[key] = _LazySpan(array.storage, first, end, path)
    else:
        span.first, span.end = min(span.first, first), max(span.end, end)


def _elements(span: _Span) -> Iterator[Array]:
    """The storage's reached elements, as contiguous pieces of at most CHUNK_BYTES."""
    raw = span.root.reshape(-1).view(np.uint8) if span.root.flags.c_contiguous else None
    if raw is None:  # a root that is itself strided: read it through its own chunks
        yield from iter_chunks(span.root, CHUNK_BYTES)
        return
    for piece in iter_chunks(raw[span.first : span.end], CHUNK_BYTES):
        usable = piece.shape[0] - piece.shape[0] % span.dtype.itemsize
        yield piece[:usable].view(span.dtype)


def _all_finite(pieces: Iterator[Array]) -> bool:
    finite = True
    for piece in pieces:
        if piece.dtype.kind == "f":
            finite = finite and bool(np.isfinite(piece).all())
        else:
            np.count_nonzero(piece)  # reads the bytes, as the floats are read
    return finite
