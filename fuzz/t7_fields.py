"""The record stream of a ``.t7`` file as fields with a meaning, for the structure-aware mutator.

A small parser of its own (it needs byte spans, which streamser's readers do not expose, and it
must not move when streamser's reader is rebuilt): every record of the stream becomes a
:class:`Record` whose :class:`Field` s say where each primitive lies (start and end byte), what it
means (a tag, an object index, a length, a class name, a tensor's sizes...) and its value. The
mutator rewrites fields by meaning and puts the bytes back with :func:`encode_int`.

Binary (``long_size`` 8 or 4) and ascii streams are parsed alike; on damage the parser stops and
returns the records it completed, so a mutated stream can be parsed again for a second mutation.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

TAG_NIL, TAG_NUMBER, TAG_STRING, TAG_TABLE, TAG_TORCH, TAG_BOOLEAN = 0, 1, 2, 3, 4, 5
TAG_FUNCTION_LEGACY, TAG_FUNCTION_RECURSIVE, TAG_FUNCTION = 6, 7, 8
INDEXED_TAGS = (TAG_TABLE, TAG_TORCH, TAG_FUNCTION_RECURSIVE, TAG_FUNCTION)
MAX_ELEMENTS_PARSED = 1 << 22  # storages longer than this are not walked (seeds are small)

ELEMENT_SIZES = {
    "Byte": 1, "Char": 1, "Short": 2, "Int": 4, "Long": 0, "Float": 4, "Double": 8, "Half": 2,
}  # fmt: skip  # Long: the stream's long size
_CLASS = re.compile(
    r"torch\.(?:Cuda)?(Byte|Char|Short|Int|Long|Float|Double|Half)?(Tensor|Storage)"
)
_SPACE = b" \t\n\r\v\f"


@dataclass
class Field:
    """One primitive of the stream: bytes ``start:end``, its meaning and value.

    ``kind`` is one of: tag, index, count (table entries), length (of a string or bytecode),
    bytes (a string's contents), version, class, ndim, size, stride, offset, elements (a
    storage's count), data (its elements), number, boolean. ``width`` is 4 or 8 for binary
    integers (0 for ascii and raw bytes).
    """

    start: int
    end: int
    kind: str
    value: Any
    width: int = 0


@dataclass
class Record:
    """One value of the stream: its header fields, and the span of it with all its children."""

    start: int
    depth: int
    tag: int
    fields: list[Field] = field(default_factory=list)
    end: int = -1  # after its last child
    index: int | None = None
    reference: bool = False
    classname: str | None = None
    children: list[int] = field(default_factory=list)  # positions in the record list

    def first(self, kind: str) -> Field | None:
        return next((f for f in self.fields if f.kind == kind), None)

    def all(self, kind: str) -> list[Field]:
        return [f for f in self.fields if f.kind == kind]


class Damaged(Exception):
    """The stream stops making sense here (the records parsed so far are kept)."""


class Cursor:
    """Reads primitives of one encoding, each as a :class:`Field`."""

    def __init__(self, data: bytes, long_size: int, ascii: bool) -> None:
        self.data = data
        self.pos = 0
        self.long_size = long_size
        self.ascii = ascii

    def _token(self) -> tuple[int, int]:
        data, pos = self.data, self.pos
        while pos < len(data) and data[pos] in _SPACE:
            pos += 1
        end = pos
        while end < len(data) and data[end] not in _SPACE:
            end += 1
        if end == pos:
            raise Damaged("input ends where a number was expected")
        self.pos = end
        return pos, end

    def integer(self, kind: str, width: int) -> Field:
        if self.ascii:
            start, end = self._token()
            try:
                return Field(start, end, kind, int(self.data[start:end]))
            except ValueError:
                raise Damaged("not an integer") from None
        start, end = self.pos, self.pos + width
        if end > len(self.data):
            raise Damaged("input ends inside an integer")
        self.pos = end
        return Field(
            start, end, kind, int.from_bytes(self.data[start:end], "little", signed=True), width
        )

    def int(self, kind: str) -> Field:
        return self.integer(kind, 4)

    def long(self, kind: str) -> Field:
        return self.integer(kind, self.long_size)

    def number(self) -> Field:
        if self.ascii:
            start, end = self._token()
            return Field(start, end, "number", self.data[start:end])
        start, end = self.pos, self.pos + 8
        if end > len(self.data):
            raise Damaged("input ends inside a number")
        self.pos = end
        return Field(start, end, "number", struct.unpack_from("<d", self.data, start)[0], 8)

    def raw(self, count: int, kind: str) -> Field:
        if self.ascii and self.pos < len(self.data) and self.data[self.pos] in _SPACE:
            self.pos += 1  # the one separator after the length
        start, end = self.pos, self.pos + count
        if count < 0 or end > len(self.data):
            raise Damaged("bytes past the end")
        self.pos = end
        return Field(start, end, kind, self.data[start:end])

    def string(self, kind: str) -> tuple[Field, Field]:
        length = self.int("length")
        return length, self.raw(length.value, kind)

    def elements(self, count: int, itemsize: int, raw_bytes: bool) -> Field:
        """A storage's elements: ``count`` numbers (ascii) or ``count * itemsize`` bytes."""
        if count < 0 or count > MAX_ELEMENTS_PARSED:
            raise Damaged("storage too long to walk")
        if not self.ascii or raw_bytes:
            return self.raw(count * itemsize, "data")
        start = self.pos
        for _ in range(count):
            self._token()
        return Field(start, self.pos, "data", count)


def element_size(classname: str, long_size: int) -> tuple[int, bool, bool] | None:
    """(itemsize, is_tensor, raw bytes in ascii) of a torch tensor or storage class, else None."""
    match = _CLASS.fullmatch(classname)
    if match is None:
        return None
    element = match.group(1) or "Float"  # torch.CudaTensor is Float
    size = ELEMENT_SIZES[element] or long_size
    return size, match.group(2) == "Tensor", element in ("Byte", "Char")


def parse(data: bytes, long_size: int = 8, ascii: bool = False) -> tuple[list[Record], str | None]:
    """Every record of the first value in ``data``, depth first, and why parsing stopped early
    (None when the value was read whole)."""
    cursor = Cursor(data, long_size, ascii)
    records: list[Record] = []
    seen: set[int] = set()
    pending: list[tuple[int, int | None]] = [(0, None)]  # (depth, parent) of values to read
    open_records: list[int] = []  # records whose children are still being read
    try:
        while pending:
            depth, parent = pending.pop()
            _close_finished(records, open_records, depth, cursor.pos)
            record = Record(cursor.pos, depth, 0)
            children = _read_record(cursor, record, seen, long_size)
            records.append(record)
            if parent is not None:
                records[parent].children.append(len(records) - 1)
            if children:
                open_records.append(len(records) - 1)
                pending.extend([(depth + 1, len(records) - 1)] * children)
            else:
                record.end = cursor.pos
        _close_finished(records, open_records, -1, cursor.pos)
    except Damaged as exc:
        return records, str(exc)
    return records, None


def _close_finished(records: list[Record], open_records: list[int], depth: int, pos: int) -> None:
    while open_records and records[open_records[-1]].depth >= depth:
        records[open_records.pop()].end = pos


def _read_record(cursor: Cursor, record: Record, seen: set[int], long_size: int) -> int:
    """Fill ``record`` from the cursor; the number of child values that follow it."""
    tag = cursor.int("tag")
    record.tag = tag.value
    record.fields.append(tag)
    if tag.value == TAG_NIL:
        return 0
    if tag.value == TAG_NUMBER:
        record.fields.append(cursor.number())
        return 0
    if tag.value == TAG_BOOLEAN:
        record.fields.append(cursor.int("boolean"))
        return 0
    if tag.value == TAG_STRING:
        record.fields.extend(cursor.string("bytes"))
        return 0
    if tag.value == TAG_FUNCTION_LEGACY:
        record.fields.extend(cursor.string("bytes"))
        return 1
    if tag.value not in INDEXED_TAGS:
        raise Damaged(f"unknown tag {tag.value}")
    index = cursor.int("index")
    record.fields.append(index)
    record.index = index.value
    if index.value in seen:
        record.reference = True
        return 0
    seen.add(index.value)
    if tag.value == TAG_TABLE:
        count = cursor.int("count")
        record.fields.append(count)
        if not 0 <= 2 * count.value <= len(cursor.data) - cursor.pos:
            raise Damaged("table count past the input")
        return 2 * count.value
    if tag.value != TAG_TORCH:
        record.fields.extend(cursor.string("bytes"))
        return 1
    return _read_torch(cursor, record, long_size)


def _read_torch(cursor: Cursor, record: Record, long_size: int) -> int:
    length, first = cursor.string("version")
    record.fields += [length, first]
    if first.value.startswith(b"V "):
        length, name = cursor.string("class")
        record.fields += [length, name]
    else:
        first.kind = "class"
        name = first
    record.classname = name.value.decode("latin-1")
    layout = element_size(record.classname, long_size)
    if layout is None:
        return 1  # a class with a table of fields
    itemsize, is_tensor, raw_bytes = layout
    if is_tensor:
        ndim = cursor.int("ndim")
        record.fields.append(ndim)
        if not 0 <= ndim.value <= 1000:
            raise Damaged("bad ndim")
        record.fields += [cursor.long("size") for _ in range(ndim.value)]
        record.fields += [cursor.long("stride") for _ in range(ndim.value)]
        record.fields.append(cursor.long("offset"))
        return 1  # the storage (or nil)
    count = cursor.long("elements")
    record.fields += [count, cursor.elements(count.value, itemsize, raw_bytes)]
    return 0


def encode_int(value: int, width: int, ascii: bool) -> bytes:
    """``value`` as the stream writes an int or long: wrapped to ``width`` bytes in binary
    (so 2**63 becomes -2**63, as a C cast would), in decimal for ascii."""
    if ascii:
        return str(value).encode()
    return (value % (1 << (8 * width))).to_bytes(width, "little")


def encode_string(data: bytes, ascii: bool) -> bytes:
    """A length-prefixed string as the stream writes it (ascii: ``len\\nbytes``)."""
    if ascii:
        return b"%d\n%s" % (len(data), data)
    return len(data).to_bytes(4, "little") + data
