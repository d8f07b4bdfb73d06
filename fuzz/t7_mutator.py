"""Mutations of ``.t7`` streams by meaning, for binary, b32, ascii and seekable zstd.

A byte-level fuzzer rarely turns a length into 2**31 - 1 while keeping the rest parseable, or
rewrites a tensor's geometry as one consistent block; this one parses the stream
(:mod:`t7_fields`) and edits fields by what they mean:

* lengths (table counts, string and bytecode lengths, storage sizes, ndim, sizes) near 2**31
  and 2**63, negative, off by one, doubled;
* object indices pointing backward, forward, to the record itself or to its parent;
* tags out of range, or swapped for another valid tag;
* class names and version strings swapped between records, replaced (tensor <-> storage,
  Long <-> Float, unknown, CUDA) or overlong, versions like ``"V 0x"`` + 300 ``f``;
* tensor geometry rewritten as a consistent block: stride 0 with huge sizes, sizes whose
  product overflows int64, one element past the storage, 63 to 100 dimensions, size 0 beside
  2**62, negative strides, offsets past the end;
* numbers (NaN, infinities, -0, 2**53 + 1, hex and huge ascii tokens);
* whole records duplicated, deleted, swapped or moved into another's place;
* for seekable zstd, the plain stream so mutated is cut into frames of a random size, and
  the container is mutated too: seek-table claims, frames swapped, dropped or duplicated,
  a frame without its content size, a truncated tail.

Everything is driven by a ``random.Random``, so a case is reproduced by its seed.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

import t7_fields as tf
import zstandard

FORMATS = ("binary", "b32", "ascii", "zstd")
Edit = tuple[int, int, bytes]  # replace data[start:end] with bytes

LENGTH_EDGES = (
    0, 1, 2, -1, -2, 2**31 - 1, 2**31, 2**31 + 1, -(2**31), 2**32, 2**32 + 1, 2**62,
    2**63 - 1, 2**63, -(2**63), 2**40, 1 << 26, (1 << 26) + 1, 1 << 30, (1 << 30) + 1,
)  # fmt: skip
CLASS_NAMES = (
    "torch.FloatTensor", "torch.DoubleTensor", "torch.LongTensor", "torch.ByteTensor",
    "torch.HalfTensor", "torch.FloatStorage", "torch.LongStorage", "torch.ByteStorage",
    "torch.CharStorage", "torch.CudaTensor", "torch.CudaLongStorage", "nn.Linear",
    "nn.Sequential", "nn.Serial", "torch.Unknown", "tds.Hash", "tds.Vec", "", "V 1", "torch.",
)  # fmt: skip
VERSIONS = (
    b"V 0x" + b"f" * 300, b"V 1e999", b"V -1", b"V nan", b"V inf", b"V 99999999999999999999",
    b"V ", b"V 1.5", b"W 1", b"V 0x", b"V 0x1p99999", b"V 1_0", b"V \x00", b"V 2", b"V -0",
)  # fmt: skip
NUMBERS_BINARY = (math.nan, -math.nan, math.inf, -math.inf, -0.0, 2.0**53 + 2, 1e308, 5e-324)
NUMBERS_ASCII = (
    b"nan", b"-nan", b"inf", b"-inf", b"0x1p99999", b"-0x1p99999", b"1e400", b"-0",
    b"9007199254740993", b"0x", b"1_0", b"0x1.8p1", b"+-1", b"1e-400", b"00000001",
)  # fmt: skip


@dataclass(frozen=True)
class Stream:
    """A plain stream and how to parse it."""

    data: bytes
    long_size: int
    ascii: bool

    def parse(self) -> list[tf.Record]:
        return tf.parse(self.data, self.long_size, self.ascii)[0]

    def with_edits(self, edits: list[Edit]) -> Stream:
        out = bytearray(self.data)
        for start, end, replacement in sorted(edits, key=lambda e: e[0], reverse=True):
            out[start:end] = replacement
        return Stream(bytes(out), self.long_size, self.ascii)


# --- one mutation by meaning -----------------------------------------------------------------


def _int_edit(stream: Stream, field: tf.Field, value: int) -> Edit:
    return field.start, field.end, tf.encode_int(value, field.width or 4, stream.ascii)


def _fields(records: list[tf.Record], *kinds: str) -> list[tf.Field]:
    return [f for r in records for f in r.fields if f.kind in kinds]


def mutate_length(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    fields = _fields(records, "count", "length", "elements", "ndim", "size")
    if not fields:
        return []
    target = rng.choice(fields)
    current = target.value if isinstance(target.value, int) else 0
    choices = [*LENGTH_EDGES, current + 1, current - 1, current * 2, -current, current + 2**32]
    return [_int_edit(stream, target, rng.choice(choices))]


def mutate_index(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    indexed = [r for r in records if r.index is not None]
    if not indexed:
        return []
    record = rng.choice(indexed)
    field = record.first("index")
    assert field is not None
    known = sorted({r.index for r in indexed if r.index is not None})
    parents = [r.index for r in records if record_position(records, record) in r.children]
    choices = [
        rng.choice(known),  # backward or self: an earlier object
        max(known) + 1,  # forward: not read yet
        max(known) + rng.randint(2, 1000),
        record.index or 0,
        0,
        -1,
        2**31 - 1,
        -(2**31),
        *[p for p in parents if p is not None],  # the record it sits inside
    ]
    return [_int_edit(stream, field, rng.choice(choices))]


def record_position(records: list[tf.Record], record: tf.Record) -> int:
    return next(i for i, r in enumerate(records) if r is record)


def mutate_tag(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    tags = _fields(records, "tag")
    if not tags:
        return []
    value = rng.choice([*range(9), -1, 9, 10, 255, 256, 2**31 - 1, -(2**31)])
    return [_int_edit(stream, rng.choice(tags), value)]


def _replace_string(stream: Stream, record: tf.Record, kind: str, text: bytes) -> list[Edit]:
    """Replace the string field ``kind`` of ``record`` and its length, consistently."""
    fields = record.fields
    for position, field in enumerate(fields):
        if field.kind == kind and position and fields[position - 1].kind == "length":
            length = fields[position - 1]
            return [(length.start, field.end, tf.encode_string(text, stream.ascii))]
    return []


def mutate_class(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    torch = [r for r in records if r.classname is not None]
    if not torch:
        return []
    record = rng.choice(torch)
    roll = rng.random()
    if roll < 0.3 and len(torch) > 1:  # swap two records' class names
        other = rng.choice(torch)
        name = (other.classname or "").encode("latin-1")
    elif roll < 0.4:
        name = b"torch." + b"X" * rng.choice([255, 4096, 65536])  # overlong
    else:
        name = rng.choice(CLASS_NAMES).encode()
    if rng.random() < 0.1:  # an inconsistent length: the class name claims more or less
        field = next((f for f in record.fields if f.kind == "length"), None)
        if field is not None:
            return [_int_edit(stream, field, rng.choice(LENGTH_EDGES))]
    return _replace_string(stream, record, "class", name)


def mutate_version(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    torch = [r for r in records if r.first("version") is not None]
    if not torch:
        return []
    record = rng.choice(torch)
    if rng.random() < 0.2:
        version = b"V " + b"9" * rng.choice([400, 5000, 70000])  # overlong
    else:
        version = rng.choice(VERSIONS)
    return _replace_string(stream, record, "version", version)


def _storage_elements(records: list[tf.Record], tensor: tf.Record) -> int | None:
    for child in tensor.children:
        field = records[child].first("elements")
        if field is not None:
            return int(field.value)
    return None


def geometry_block(rng: random.Random, elements: int | None) -> tuple[list[int], list[int], int]:
    """(sizes, strides, 0-based offset) of a hostile but consistently written geometry."""
    n = elements if elements is not None else rng.choice([0, 1, 16, 2**31])
    shapes: list[Callable[[], tuple[list[int], list[int], int]]] = [
        lambda: ([2**40, 2**40], [0, 0], 0),  # stride 0, huge sizes
        lambda: ([2**62, 4], [0, 0], 0),
        lambda: ([2**32, 2**32, 4], [1, 1, 1], 0),  # product overflows int64
        lambda: ([3037000500, 3037000500], [1, 1], 0),
        lambda: ([max(n, 1)], [1], 1),  # one element past the storage
        lambda: ([max(n - 1, 0) + 1], [1], 0),
        lambda: ([2, max(n, 1)], [max(n, 1), 1], 0),
        lambda: ([1] * (d := rng.randint(63, 100)), [1] * d, 0),  # 63 to 100 dimensions
        lambda: ([2] * 64, [0] * 64, 0),
        lambda: ([0, 2**62], [1, 1], 0),  # empty, yet too big for numpy
        lambda: ([0, 2**63 - 1], [2**63 - 1, 1], n + 5),
        lambda: ([max(n, 1)], [-1], max(n - 1, 0)),  # negative stride
        lambda: ([-1], [1], 0),
        lambda: ([max(n, 1)], [1], 2**62),  # offset far past the end
        lambda: ([max(n, 1)], [1], -2),
        lambda: ([], [], rng.choice([0, n, n + 1, -1])),  # 0-d
        lambda: ([n // 2 + 1, 2], [1, n // 2], 0),  # overlapping, last element past the end
    ]
    return rng.choice(shapes)()


def mutate_geometry(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    tensors = [r for r in records if r.first("ndim") is not None]
    if not tensors:
        return []
    tensor = rng.choice(tensors)
    ndim, offset = tensor.first("ndim"), tensor.first("offset")
    assert ndim is not None
    assert offset is not None
    sizes, strides, start = geometry_block(rng, _storage_elements(records, tensor))
    long_width = stream.long_size
    pieces = [tf.encode_int(len(sizes), 4, stream.ascii)]
    pieces += [tf.encode_int(v, long_width, stream.ascii) for v in (*sizes, *strides, start + 1)]
    joined = b"\n".join(pieces) if stream.ascii else b"".join(pieces)
    return [(ndim.start, offset.end, joined)]


def mutate_number(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    numbers = _fields(records, "number", "boolean")
    if not numbers:
        return []
    field = rng.choice(numbers)
    if field.kind == "boolean":
        return [_int_edit(stream, field, rng.choice([2, -1, 2**31 - 1, 0, 1]))]
    if stream.ascii:
        return [(field.start, field.end, rng.choice(NUMBERS_ASCII))]
    return [(field.start, field.end, struct.pack("<d", rng.choice(NUMBERS_BINARY)))]


def mutate_records(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    """Duplicate, delete, swap or transplant whole records (with their children)."""
    whole = [r for r in records if r.end > r.start]
    if not whole:
        return []
    one = rng.choice(whole)
    body = stream.data[one.start : one.end]
    roll = rng.random()
    if roll < 0.3:
        return [(one.end, one.end, body)]  # duplicated
    if roll < 0.5:
        return [(one.start, one.end, b"")]  # deleted
    other = rng.choice(whole)
    if other.start >= one.end or one.start >= other.end:  # disjoint: swap
        return [
            (one.start, one.end, stream.data[other.start : other.end]),
            (other.start, other.end, body),
        ]
    return (
        [(other.start, other.end, body)] if other is not one else []
    )  # a record replaced by one around it


def mutate_bytes(rng: random.Random, stream: Stream, records: list[tf.Record]) -> list[Edit]:
    """A little havoc, for the paths no field rule reaches: a string's contents or data."""
    if not stream.data:
        return [(0, 0, bytes([rng.randrange(256)]))]
    pos = rng.randrange(len(stream.data))
    if rng.random() < 0.5:
        return [(pos, pos + 1, bytes([stream.data[pos] ^ (1 << rng.randrange(8))]))]
    return [(pos, len(stream.data), b"")]  # truncated


MUTATIONS: tuple[
    tuple[Callable[[random.Random, Stream, list[tf.Record]], list[Edit]], float], ...
] = (
    (mutate_length, 3),
    (mutate_index, 2),
    (mutate_tag, 1),
    (mutate_class, 2),
    (mutate_version, 1),
    (mutate_geometry, 3),
    (mutate_number, 1),
    (mutate_records, 2),
    (mutate_bytes, 0.5),
)


def mutate_stream(rng: random.Random, stream: Stream, steps: int) -> tuple[Stream, list[str]]:
    """``steps`` mutations in a row, parsing again between them; the names of those applied."""
    applied = []
    functions, weights = zip(*MUTATIONS, strict=True)
    for _ in range(steps):
        records = stream.parse()
        mutation = rng.choices(functions, weights)[0]
        edits = mutation(rng, stream, records)
        if edits:
            stream = stream.with_edits(edits)
            applied.append(mutation.__name__.removeprefix("mutate_"))
    return stream, applied


# --- seekable zstd ---------------------------------------------------------------------------


def seekable(plain: bytes, frame_size: int) -> tuple[list[bytes], list[tuple[int, int]]]:
    """``plain`` cut into frames of ``frame_size``: the compressed frames and table entries."""
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    pieces = [plain[i : i + frame_size] for i in range(0, len(plain), frame_size)]
    frames = [compressor.compress(piece) for piece in pieces]
    return frames, [(len(f), len(p)) for f, p in zip(frames, pieces, strict=True)]


def seek_table(
    entries: list[tuple[int, int]], count: int | None = None, descriptor: int = 0
) -> bytes:
    body = b"".join(struct.pack("<II", c % 2**32, d % 2**32) for c, d in entries)
    body += struct.pack(
        "<IBI", (len(entries) if count is None else count) % 2**32, descriptor, 0x8F92EAB1
    )
    return struct.pack("<II", 0x184D2A5E, len(body)) + body


def mutate_container(rng: random.Random, plain: bytes) -> tuple[bytes, list[str]]:
    """A seekable zstd file of ``plain``, its container mutated one time in three."""
    frames, entries = seekable(plain, rng.choice([16, 64, 256, 1024, 4096, 1 << 20]))
    if not frames or rng.random() < 0.67:
        return b"".join(frames) + seek_table(entries), []
    which = rng.randrange(len(frames))
    packed, size = entries[which]
    roll = rng.randrange(9)
    count, descriptor = None, 0
    if roll == 0:  # the table claims another decompressed size
        entries[which] = (
            packed,
            rng.choice([size + 1, max(size - 1, 0), 0, 2**32 - 1, 1 << 30, (1 << 30) + 1]),
        )
    elif roll == 1:  # ...or another compressed size
        entries[which] = (rng.choice([packed + 1, max(packed - 1, 0), 0, 2**32 - 1]), size)
    elif roll == 2 and len(frames) > 1:  # two frames swapped (their entries too)
        other = rng.randrange(len(frames))
        frames[which], frames[other] = frames[other], frames[which]
        entries[which], entries[other] = entries[other], entries[which]
    elif roll == 3:  # a frame dropped, its entry kept
        del frames[which]
    elif roll == 4:  # a frame duplicated, with its entry
        frames.insert(which, frames[which])
        entries.insert(which, entries[which])
    elif roll == 5:  # a frame without content size or checksum
        writer = zstandard.ZstdCompressor(write_content_size=False, write_checksum=False)
        frames[which] = writer.compress(plain[sum(d for _, d in entries[:which]) :][:size])
        entries[which] = (len(frames[which]), size)
    elif roll == 6:
        count = rng.choice([len(entries) + 1, 2**32 - 1, 0])
    elif roll == 7:
        descriptor = rng.choice([0x80, 0x7C, 0x01])
    else:  # a huge claim over many frames
        entries = [(c, rng.choice([d, 1 << 30])) for c, d in entries]
    data = b"".join(frames) + seek_table(entries, count, descriptor)
    if rng.random() < 0.2:
        data = data[: rng.randrange(len(data) + 1)]
    return data, [f"container-{roll}"]
