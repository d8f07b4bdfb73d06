"""The record stream of a ``.t7`` file, one record per value, as ``pickletools.genops`` does.

Used by ``streamser dis`` to debug damaged files and by tests as executable documentation of
the format. It builds no values and skips tensor data, so it walks a file of any size in time
proportional to its number of records; on damage it yields what it could read and then raises
the reader's error, with the offset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ..codecs import Decoder
from ..errors import FormatError, TruncatedError
from .format import (
    CLASSES,
    MAX_EXACT_INT,
    TAG_BOOLEAN,
    TAG_FUNCTION,
    TAG_FUNCTION_LEGACY,
    TAG_FUNCTION_LEGACY_RECURSIVE,
    TAG_NAMES,
    TAG_NIL,
    TAG_NUMBER,
    TAG_STRING,
    TAG_TABLE,
    TAG_TORCH,
)


@dataclass(frozen=True)
class Record:
    """One value of the stream: where it starts, how deep it sits, what it is."""

    offset: int
    depth: int
    tag: int
    index: int | None  # the object index, for tables, torch objects and functions
    summary: str
    reference: bool = False  # a back-reference to an object read earlier


def iter_records(decoder: Decoder, *, max_records: int | None = None) -> Iterator[Record]:
    """Every record of the next value in ``decoder``'s stream, depth first."""
    seen: set[int] = set()
    pending = [0]  # depth of each value still to read, as a stack
    count = 0
    while pending:
        depth = pending.pop()
        at = decoder.pos
        tag = decoder.read_int()
        record, children = _read_record(decoder, tag, at, depth, seen)
        yield record
        count += 1
        if max_records is not None and count >= max_records:
            return
        pending.extend([depth + 1] * children)


def _read_record(
    decoder: Decoder, tag: int, at: int, depth: int, seen: set[int]
) -> tuple[Record, int]:
    """The record starting at ``at`` and how many child values follow it."""
    if tag == TAG_NIL:
        return Record(at, depth, tag, None, "nil"), 0
    if tag == TAG_NUMBER:
        return Record(at, depth, tag, None, repr(number_value(decoder.read_double()))), 0
    if tag == TAG_BOOLEAN:
        return Record(at, depth, tag, None, str(decoder.read_int() == 1).lower()), 0
    if tag == TAG_STRING:
        return Record(at, depth, tag, None, _short(decode_string(decoder.read_string()))), 0
    if tag == TAG_FUNCTION_LEGACY:
        size = len(decoder.read_string())
        return Record(at, depth, tag, None, f"function, {size} bytes of bytecode"), 1
    if tag not in (TAG_TABLE, TAG_TORCH, TAG_FUNCTION, TAG_FUNCTION_LEGACY_RECURSIVE):
        raise FormatError(f"unknown type tag {tag}", at)
    index = decoder.read_int()
    if index in seen:
        return Record(at, depth, tag, index, f"-> object {index}", reference=True), 0
    seen.add(index)
    if tag == TAG_TABLE:
        count = decoder.read_int()
        if count < 0:
            raise FormatError(f"table claims {count} entries", at)
        if 2 * count * decoder.min_record > decoder.remaining():  # before a list of them
            raise TruncatedError(f"input too short for a table of {count} entries", at)
        return Record(at, depth, tag, index, f"table of {count} entries"), 2 * count
    if tag != TAG_TORCH:
        size = len(decoder.read_string())
        return Record(at, depth, tag, index, f"function, {size} bytes of bytecode"), 1
    return _read_torch_record(decoder, at, depth, index, seen)


def _read_torch_record(
    decoder: Decoder, at: int, depth: int, index: int, seen: set[int]
) -> tuple[Record, int]:
    version, raw_name = read_class_header(decoder)
    name = raw_name.decode("utf-8", "surrogateescape")
    cls = CLASSES.get(name)
    if cls is None:
        return Record(at, depth, TAG_TORCH, index, f"{name} (version {version})"), 1
    if cls.is_tensor:
        sizes, strides, offset = decoder.read_geometry()
        summary = f"{name} size {list(sizes)} stride {list(strides)} offset {offset + 1}"
        return Record(at, depth, TAG_TORCH, index, summary), 1
    count = decoder.read_long()
    if count < 0:
        raise FormatError(f"storage claims {count} elements", at)
    data_at = decoder.skip_array(cls.element, count)
    summary = f"{name} of {count} elements, data at byte {data_at}"
    return Record(at, depth, TAG_TORCH, index, summary), 0


def _short(text: str | bytes, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def describe(record: Record) -> str:
    """One line of ``streamser dis``: offset, indentation by depth, tag, index, summary."""
    name = TAG_NAMES.get(record.tag, str(record.tag))
    index = f"#{record.index}" if record.index is not None else ""
    return f"{record.offset:>10}: {'  ' * record.depth}{name:<12} {index:<6} {record.summary}"


_VERSION = re.compile(rb"V (.*)", re.DOTALL)


def decode_string(raw: bytes) -> str | bytes:
    """Lua strings are bytes; valid UTF-8 comes back as ``str``, anything else as ``bytes``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def number_value(value: float) -> int | float:
    """Integral doubles within 2**53 become ``int`` (except -0.0, which keeps its sign)."""
    exact = value.is_integer() and -MAX_EXACT_INT <= value <= MAX_EXACT_INT
    if exact and (value or math.copysign(1.0, value) > 0):
        return int(value)
    return value


_VERSIONS: dict[bytes, int | float] = {b"V %d" % n: n for n in range(10)}


def read_class_header(decoder: Decoder) -> tuple[int | float, bytes]:
    """A torch object's version and raw class name, as Torch7's ``readObject`` reads them.

    The first string is ``"V <n>"``; when it is not, it *is* the class name and the version is
    0 (files older than versioning).
    """
    first = decoder.read_string()
    version = _VERSIONS.get(first)  # the usual "V 1", without a regular expression
    if version is None:
        match = _VERSION.fullmatch(first)
        version = _parse_version(match.group(1)) if match else None
        if version is None:
            return 0, first
    return version, decoder.read_string()


def _parse_version(text: bytes) -> int | float | None:
    """Lua's ``tonumber`` of the text after ``V ``, or None when it is not a finite number."""
    try:
        value = float(int(text, 16)) if text.strip().lower().startswith(b"0x") else float(text)
    except (ValueError, OverflowError):  # over 2**1024: Lua's tonumber gives inf, not finite
        return None
    return number_value(value) if math.isfinite(value) else None
