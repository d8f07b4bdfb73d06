"""One value for ``streamser.open``, from wherever the file's bytes are.

A local file (or a file object with a descriptor) is mapped: plain binary files are read as views
of the mapping, seekable zstd files frame by frame. A URL or any other seekable file object is
read by range: its records are fetched and parsed, its tensors left where they are until asked
for (:func:`.loading.read_ranged`). Whatever the way in, the result says where lazily read
tensors come from and whether offsets are those of a plain stream inside a compressed file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..io.compression import is_zstd
from ..io.inputs import ranged_input, whole_input
from ..io.ranged import ByteSource, RangeOptions
from ..spec.limits import Limits
from .loading import Reading, read_buffer, read_ranged


@dataclass(frozen=True)
class Opened:
    """A value read for lazy access: ``source`` is where its lazy tensors read from (None when
    everything is in ``reading.buffer``); ``size`` is the bytes of the plain stream."""

    reading: Reading
    source: ByteSource | None
    compressed: bool
    size: int


def open_reading(
    target: Any,
    format: str | None,
    *,
    referenced: bool,
    limits: Limits,
    storage_options: dict[str, Any] | None = None,
    options: RangeOptions | None = None,
) -> Opened:
    """Parse ``target`` (a path, URL or file object) the cheapest way its bytes allow."""
    ranged = ranged_input(
        target, storage_options=storage_options, options=options or RangeOptions()
    )
    if ranged is not None:
        reading, compressed = read_ranged(
            ranged, format, referenced=referenced, limits=limits, indexed=True
        )
        size = reading.source.size if reading.source is not None else len(reading.buffer)
        return Opened(reading, reading.source, compressed, size)
    buffer, start = whole_input(target, mmap=True)
    compressed = is_zstd(buffer, start)
    reading = read_buffer(
        buffer, start, format, referenced=referenced, limits=limits, indexed=True, lazy=True
    )
    size = reading.source.size if reading.source is not None else len(reading.buffer)
    return Opened(reading, reading.source, compressed, size)
