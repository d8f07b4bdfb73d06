"""The record grammar of a ``.t7`` stream: the one place that knows how records are laid out.

:mod:`.format` says what the bytes mean; this module reads them. Every consumer of a stream
follows it: the object-graph reader (``graph.reader``; its compiled twin ``_fastread.c``
mirrors these functions and hands everything unusual back to them), the record iterator behind
``streamser dis``, the lazy tensor index of ``streamser.open`` and ``verify`` (both through the
reader), and the prefetch of seekable zstd files, whose decoder is asked for exactly the bytes
these functions read. No other module decodes a length, a class header or a geometry.

A decoder (``codecs``) supplies primitives only: ``read_int``, ``read_long``, ``read_longs``,
``read_double``, ``read_raw``, ``read_array`` / ``skip_array``, in binary or ascii. On top of
them a value is a *record*:

================  ==========================================================================
record            layout
================  ==========================================================================
any value         int tag, then the tag's payload
string            int length, that many raw bytes                          (:func:`read_string`)
table             int index; if new: int count, then ``2 * count`` values  (:func:`read_count`)
torch object      int index; if new: class header (:func:`read_class_header`), then the class's
                  payload: a tensor's geometry (:func:`read_geometry`) and its storage (a torch
                  object or nil); a storage's element count (:func:`read_storage_count`) and
                  elements; a registered class's own payload (:class:`ClassPayload`) and the
                  objects it announces; any other class's field table (:func:`read_fields_tag`)
function          (tag 8, 7) int index; if new: bytecode (:func:`read_string`), one upvalue value;
                  (tag 6) no index
================  ==========================================================================

An index met again is a back-reference (with ``referenced``, the default) and has no payload.
:func:`iter_records` walks a stream as a sequence of :class:`Record` with their byte offsets,
building no values and skipping tensor data, in memory bounded by the nesting depth whatever a
count claims: ``streamser dis`` prints them, and tests use them as executable documentation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import FormatError, TruncatedError
from .format import (
    CLASSES,
    FUNCTION_TAGS,
    MAX_EXACT_INT,
    TAG_BOOLEAN,
    TAG_FUNCTION_LEGACY,
    TAG_NAMES,
    TAG_NIL,
    TAG_NUMBER,
    TAG_STRING,
    TAG_TABLE,
    TAG_TORCH,
    ElementType,
)
from .limits import Limits, depth_error, limit_error


class Primitives(Protocol):
    """What the grammar needs of a decoder (``codecs.BinaryDecoder``, ``AsciiDecoder``, ...)."""

    pos: int
    max_string: int
    min_record: int  # bytes of the smallest value: a bound on what a count may claim
    min_long_bytes: int

    def remaining(self) -> int: ...
    def read_int(self) -> int: ...
    def read_long(self) -> int: ...
    def read_longs(self, count: int) -> tuple[int, ...]: ...
    def read_double(self) -> float: ...
    def read_raw(self, count: int) -> bytes: ...
    def skip_array(self, element: ElementType, count: int) -> int: ...


# --- the parts of a record -------------------------------------------------------------------


def read_string(decoder: Primitives) -> bytes:
    """A string's bytes: int length, then the bytes (also class names and bytecode)."""
    at = decoder.pos
    count = decoder.read_int()
    if count < 0:
        raise FormatError(f"negative string length {count}", at)
    left = decoder.remaining()
    if count > left:  # first: a claim beyond the input is damage, whatever the limit
        raise TruncatedError(f"input ends inside a string of {count} bytes ({left} left)", at)
    if count > decoder.max_string:
        raise limit_error(f"a string of {count:,} bytes", "max_string", decoder.max_string, at)
    return decoder.read_raw(count)


def read_count(decoder: Primitives, at: int, max_table: int) -> int:
    """A table's number of entries, checked against the bytes left and ``max_table``."""
    count = decoder.read_int()
    if count < 0:
        raise FormatError(f"table claims {count} entries", at)
    left = decoder.remaining()
    if 2 * count * decoder.min_record > left:
        raise TruncatedError(f"table claims {count} entries but only {left} bytes are left", at)
    if count > max_table:
        raise limit_error(f"a table of {count:,} entries", "max_table", max_table, at)
    return count


def check_objects(decoder: Primitives, count: int, what: str, at: int) -> int:
    """A number of objects announced by a payload, checked against the bytes left."""
    if count < 0:
        raise FormatError(f"{what} announces {count} objects", at)
    left = decoder.remaining()
    if count * decoder.min_record > left:
        raise TruncatedError(f"{what} announces {count} objects but only {left} bytes are left", at)
    return count


@dataclass(frozen=True, slots=True)
class Geometry:
    """A tensor's sizes and strides (in elements) and its 0-based offset in its storage."""

    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int


def read_geometry(decoder: Primitives, at: int) -> Geometry:
    """int nDimension, long sizes[n], long strides[n], long storageOffset + 1."""
    ndim = decoder.read_int()
    if ndim < 0:
        raise FormatError(f"tensor claims {ndim} dimensions", at)
    need = (2 * ndim + 1) * decoder.min_long_bytes
    left = decoder.remaining()
    if need > left:
        raise TruncatedError(
            f"input ends inside the geometry of a tensor with {ndim} dimensions "
            f"({need} bytes needed, {left} left)",
            at,
        )
    longs = decoder.read_longs(2 * ndim + 1)
    return Geometry(longs[:ndim], longs[ndim : 2 * ndim], longs[-1] - 1)


def read_storage_count(decoder: Primitives, at: int) -> int:
    """A storage's number of elements (its elements follow)."""
    count = decoder.read_long()
    if count < 0:
        raise FormatError(f"storage claims {count} elements", at)
    return count


def read_fields_tag(decoder: Primitives, typename: str) -> int:
    """The tag of the field table that a class without a payload of its own writes.

    Anything else means the class writes its own payload (tds.Hash, a custom ``write``): it is
    refused here, never misread, with the way to teach streamser the class.
    """
    at = decoder.pos
    tag = decoder.read_int()
    if tag != TAG_TABLE:
        found = TAG_NAMES.get(tag, f"type tag {tag}")
        raise FormatError(
            f"{typename} writes a payload of its own (it starts with a {found}, not a table "
            f"of fields), and no reader is registered for it: register one with "
            f"streamser.register_class (see 'Torch classes with their own payload' in the README)",
            at,
        )
    return tag


class ClassPayload:
    """The primitives a registered class reads or writes in its own payload (its ``__read``).

    A :class:`~streamser.values.classes.ClassCodec` receives one: numbers and strings are read
    here as Torch's ``File`` reads them, in whatever format the stream has; the objects that
    follow are read by the graph reader, not by the codec.
    """

    __slots__ = ("_decoder",)

    def __init__(self, decoder: Primitives) -> None:
        self._decoder = decoder

    def read_int(self) -> int:
        return self._decoder.read_int()

    def read_long(self) -> int:
        return self._decoder.read_long()

    def read_double(self) -> float:
        return self._decoder.read_double()

    def read_string(self) -> bytes:
        """An int length and that many bytes, as ``File:writeString`` after ``writeInt``."""
        return read_string(self._decoder)


class PayloadReader(Protocol):
    """What a registered class reads at the head of its payload (see :class:`ClassPayload`)."""

    def read_int(self) -> int: ...
    def read_long(self) -> int: ...
    def read_double(self) -> float: ...
    def read_string(self) -> bytes: ...


class ClassReader(Protocol):
    """The reading half of a registered class, as the grammar sees it."""

    def read_head(self, payload: PayloadReader, version: int | float) -> tuple[Any, int]: ...


# --- the record stream ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One value of the stream: where it starts, how deep it sits, what it is."""

    offset: int
    depth: int
    tag: int
    index: int | None  # the object index, for tables, torch objects and functions
    summary: str
    reference: bool = False  # a back-reference to an object read earlier


class _Pending:
    """Values still to come inside one record, and what the first of them must be."""

    __slots__ = ("fields_of", "left")

    def __init__(self, left: int, fields_of: str | None = None) -> None:
        self.left = left
        self.fields_of = fields_of  # the class whose field table comes next, if any


def iter_records(
    decoder: Any,
    *,
    classes: Mapping[str, ClassReader] | None = None,
    limits: Limits | None = None,
    referenced: bool = True,
    max_records: int | None = None,
) -> Iterator[Record]:
    """Every record of the next value in ``decoder``'s stream, depth first.

    ``classes`` are the registered classes with payloads of their own (see
    :mod:`streamser.values.classes`). Memory is bounded by the nesting depth (``max_depth``),
    never by a count: what a record announces is a counter on a stack of :class:`_Pending`.
    """
    limits = limits or Limits()
    decoder.max_string = limits.max_string
    walk = _Walk(decoder, classes or {}, limits, referenced)
    stack: list[_Pending] = [_Pending(1)]
    count = 0
    while stack:
        top = stack[-1]
        if not top.left:
            stack.pop()
            continue
        top.left -= 1
        record, inner = walk.record(len(stack) - 1, top)
        yield record
        count += 1
        if max_records is not None and count >= max_records:
            return
        if inner is not None:
            if len(stack) > limits.max_depth:
                raise depth_error(limits.max_depth, record.offset)
            stack.append(inner)


class _Walk:
    """The state a record walk needs: the decoder, the registered classes, the indices seen."""

    def __init__(
        self, decoder: Any, classes: Mapping[str, ClassReader], limits: Limits, referenced: bool
    ) -> None:
        self.decoder = decoder
        self.classes = classes
        self.limits = limits
        self.referenced = referenced
        self.seen: set[int] = set()

    def record(self, depth: int, parent: _Pending) -> tuple[Record, _Pending | None]:
        """The next record and what it announces, if anything."""
        decoder = self.decoder
        at = decoder.pos
        if parent.fields_of is not None:
            tag = read_fields_tag(decoder, parent.fields_of)
            parent.fields_of = None
        else:
            tag = decoder.read_int()
        if tag == TAG_NIL:
            return Record(at, depth, tag, None, "nil"), None
        if tag == TAG_NUMBER:
            return Record(at, depth, tag, None, repr(number_value(decoder.read_double()))), None
        if tag == TAG_BOOLEAN:
            return Record(at, depth, tag, None, str(decoder.read_int() == 1).lower()), None
        if tag == TAG_STRING:
            text = _short(decode_string(read_string(decoder)))
            return Record(at, depth, tag, None, text), None
        if tag == TAG_FUNCTION_LEGACY:
            return self._function(at, depth, tag, None)
        if tag not in (TAG_TABLE, TAG_TORCH) and tag not in FUNCTION_TAGS:
            raise FormatError(f"unknown type tag {tag}", at)
        index = decoder.read_int()
        if self.referenced and index in self.seen:
            return Record(at, depth, tag, index, f"-> object {index}", reference=True), None
        self.seen.add(index)
        if len(self.seen) > self.limits.max_objects:
            raise limit_error("the number of objects", "max_objects", self.limits.max_objects, at)
        if tag == TAG_TABLE:
            count = read_count(decoder, at, self.limits.max_table)
            return Record(at, depth, tag, index, f"table of {count} entries"), _Pending(2 * count)
        if tag == TAG_TORCH:
            return self._torch(at, depth, index)
        return self._function(at, depth, tag, index)

    def _function(
        self, at: int, depth: int, tag: int, index: int | None
    ) -> tuple[Record, _Pending]:
        size = len(read_string(self.decoder))
        return Record(at, depth, tag, index, f"function, {size} bytes of bytecode"), _Pending(1)

    def _torch(self, at: int, depth: int, index: int) -> tuple[Record, _Pending | None]:
        decoder = self.decoder
        version, raw_name = read_class_header(decoder)
        name = raw_name.decode("utf-8", "surrogateescape")
        cls = CLASSES.get(name)
        if cls is not None and cls.is_tensor:
            g = read_geometry(decoder, at)
            summary = f"{name} size {list(g.sizes)} stride {list(g.strides)} offset {g.offset + 1}"
            return Record(at, depth, TAG_TORCH, index, summary), _Pending(1)
        if cls is not None:
            count = read_storage_count(decoder, at)
            data_at = decoder.skip_array(cls.element, count)
            summary = f"{name} of {count} elements, data at byte {data_at}"
            return Record(at, depth, TAG_TORCH, index, summary), None
        codec = self.classes.get(name)
        if codec is None:
            summary = f"{name} (version {version})"
            return Record(at, depth, TAG_TORCH, index, summary), _Pending(1, fields_of=name)
        _value, count = codec.read_head(ClassPayload(decoder), version)
        check_objects(decoder, count, name, at)
        summary = f"{name} (version {version}), {count} objects follow"
        return Record(at, depth, TAG_TORCH, index, summary), _Pending(count)


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


def read_class_header(decoder: Primitives) -> tuple[int | float, bytes]:
    """A torch object's version and raw class name, as Torch7's ``readObject`` reads them.

    The first string is ``"V <n>"``; when it is not, it *is* the class name and the version is
    0 (files older than versioning).
    """
    first = read_string(decoder)
    version = _VERSIONS.get(first)  # the usual "V 1", without a regular expression
    if version is None:
        match = _VERSION.fullmatch(first)
        version = _parse_version(match.group(1)) if match else None
        if version is None:
            return 0, first
    return version, read_string(decoder)


def _parse_version(text: bytes) -> int | float | None:
    """Lua's ``tonumber`` of the text after ``V ``, or None when it is not a finite number."""
    try:
        value = float(int(text, 16)) if text.strip().lower().startswith(b"0x") else float(text)
    except (ValueError, OverflowError):  # over 2**1024: Lua's tonumber gives inf, not finite
        return None
    return number_value(value) if math.isfinite(value) else None
