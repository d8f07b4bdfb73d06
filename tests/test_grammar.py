"""spec/grammar: the record layout, read in one place, and the record stream behind ``dis``.

Inputs are written by hand with the layout of ``../shared/FORMAT.md``; the records of the same
value read alike in binary, b32, ascii and through the seekable zstd decoder.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from support import CORPUS, f64, i32, i64, lua_string, number, storage_record, string, torch_header

import streamser
from streamser import FormatError, LimitError, TruncatedError
from streamser.codecs import AsciiDecoder, BinaryDecoder
from streamser.graph.loading import Framed, open_input
from streamser.spec import grammar
from streamser.spec.format import FORMATS
from streamser.spec.grammar import ClassPayload, Record, describe, iter_records
from streamser.spec.limits import Limits
from streamser.values.classes import CLASS_CODECS


def records(data: bytes, long_size: int = 8, **options: object) -> list[Record]:
    return list(iter_records(BinaryDecoder(data, long_size), classes=CLASS_CODECS, **options))


def test_records_carry_offsets_depths_and_references() -> None:
    storage = storage_record(3, "torch.FloatStorage", 2, bytes(8))
    tensor = torch_header(2, "torch.FloatTensor") + i32(1) + i64(2, 1, 1) + storage
    again = torch_header(4, "torch.FloatTensor") + i32(1) + i64(1, 1, 2) + i32(4, 3)
    data = i32(3, 1, 2) + string(b"t") + tensor + number(2) + again
    got = records(data)
    assert [(r.offset, r.depth, r.tag, r.index, r.reference) for r in got] == [
        (0, 0, 3, 1, False), (12, 1, 2, None, False), (21, 1, 4, 2, False),
        (85, 2, 4, 3, False), (138, 1, 1, None, False), (150, 1, 4, 4, False),
        (214, 2, 4, 3, True),
    ]  # fmt: skip
    assert got[2].summary == "torch.FloatTensor size [2] stride [1] offset 1"
    assert got[3].summary == "torch.FloatStorage of 2 elements, data at byte 130"
    assert got[6].summary == "-> object 3"
    assert describe(got[1]) == "        12:   string              't'"


def test_the_same_value_reads_alike_in_every_encoding(tmp_path: Path) -> None:
    value = streamser.load(CORPUS / "nn_seq.binary.t7")
    summaries = {}
    for fmt in ("binary", "b32", "ascii"):
        data = streamser.serialize(value, fmt)
        decoder = (
            AsciiDecoder(data) if fmt == "ascii" else BinaryDecoder(data, FORMATS[fmt].long_size)
        )
        summaries[fmt] = [(r.depth, r.tag, r.index, r.summary) for r in iter_records(decoder)]
    strip = [(d, t, i, s.split(", data at")[0]) for d, t, i, s in summaries["binary"]]
    assert strip == [(d, t, i, s.split(", data at")[0]) for d, t, i, s in summaries["ascii"]]
    assert len(summaries["b32"]) == len(summaries["binary"])
    path = tmp_path / "seq.t7"
    streamser.save(path, value, compress="zstd")
    stream = open_input(path.read_bytes(), 0, Limits(), lazy=True)
    assert isinstance(stream, Framed)
    framed = [(r.offset, r.summary) for r in iter_records(stream.decoder(FORMATS["binary"]))]
    stream.close()
    assert framed == [(r.offset, r.summary) for r in records(streamser.serialize(value))]


def test_a_count_is_never_trusted() -> None:
    """100 million claimed entries: refused at once, with nothing allocated for them."""
    tracemalloc.start()
    try:
        with pytest.raises(TruncatedError, match="table claims 100000000 entries"):
            records(i32(3, 1, 100_000_000) + bytes(16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    lots = i32(3, 1, 3000) + (number(1) + number(2)) * 3000
    assert len(records(lots)) == 6001  # pending values are counted, never listed


def test_limits_apply_to_the_walk() -> None:
    deep = i32(3, 1, 1) + number(1)
    for index in range(2, 6):
        deep += i32(3, index, 1) + number(1)
    deep += i32(0)
    with pytest.raises(LimitError, match="max_depth=3"):
        records(deep, limits=Limits(max_depth=3))
    with pytest.raises(LimitError, match="max_table"):
        records(i32(3, 1, 2) + (number(1) + number(2)) * 2, limits=Limits(max_table=1))
    with pytest.raises(LimitError, match="max_objects"):
        records(deep, limits=Limits(max_objects=2))
    with pytest.raises(LimitError, match="max_string"):
        records(string(b"long"), limits=Limits(max_string=3))
    assert len(records(deep, max_records=2)) == 2


def test_back_references_need_referenced() -> None:
    data = i32(3, 1, 1) + number(1) + i32(3, 1, 0)
    assert records(data)[2].reference
    assert not records(data, referenced=False)[2].reference


def test_class_headers_versions_and_old_files() -> None:
    versions = {b"V 1": 1, b"V 0": 0, b"V 2.5": 2.5, b"V 0x10": 16}
    for text, version in versions.items():
        decoder = BinaryDecoder(lua_string(text) + lua_string(b"nn.X"))
        assert grammar.read_class_header(decoder) == (version, b"nn.X")
    old = BinaryDecoder(lua_string(b"nn.Old"))  # before versions: the first string is the name
    assert grammar.read_class_header(old) == (0, b"nn.Old")


def test_parts_of_records_and_their_errors() -> None:
    with pytest.raises(FormatError, match="negative string length -2"):
        grammar.read_string(BinaryDecoder(i32(-2)))
    with pytest.raises(TruncatedError, match="a string of 9 bytes"):
        grammar.read_string(BinaryDecoder(i32(9) + b"abc"))
    with pytest.raises(FormatError, match="table claims -1 entries"):
        grammar.read_count(BinaryDecoder(i32(-1)), 0, 10)
    geometry = grammar.read_geometry(BinaryDecoder(i32(2) + i64(2, 3, 3, 1, 5)), 0)
    assert (geometry.sizes, geometry.strides, geometry.offset) == ((2, 3), (3, 1), 4)
    b32 = grammar.read_geometry(BinaryDecoder(i32(1) + i32(4, 1, 1), 4), 0)
    assert (b32.sizes, b32.offset) == ((4,), 0)
    ascii = grammar.read_geometry(AsciiDecoder(b"2\n2 3\n3 1\n5\n"), 0)
    assert ascii == geometry
    with pytest.raises(FormatError, match="claims -1 dimensions"):
        grammar.read_geometry(BinaryDecoder(i32(-1)), 0)
    with pytest.raises(TruncatedError, match="geometry of a tensor with 3 dimensions"):
        grammar.read_geometry(BinaryDecoder(i32(3) + i64(1)), 0)
    with pytest.raises(FormatError, match="storage claims -4 elements"):
        grammar.read_storage_count(BinaryDecoder(i64(-4)), 0)
    assert grammar.read_fields_tag(BinaryDecoder(i32(3)), "nn.Linear") == 3
    with pytest.raises(FormatError, match=r"nn\.Odd writes a payload of its own"):
        grammar.read_fields_tag(BinaryDecoder(i32(1)), "nn.Odd")
    payload = ClassPayload(BinaryDecoder(i32(7) + i64(8) + f64(0.5) + lua_string(b"s")))
    assert (payload.read_int(), payload.read_long(), payload.read_double()) == (7, 8, 0.5)
    assert payload.read_string() == b"s"


def test_registered_and_unknown_classes_in_the_stream() -> None:
    tds = (Path(__file__).parent / "real-world" / "torchfile" / "tds_vec.t7").read_bytes()
    listed = records(tds)
    assert listed[0].summary == "tds.Vec (version 0), 2 objects follow"
    assert [r.summary for r in listed[1:]] == ["123", "456"]
    with pytest.raises(FormatError, match=r"tds\.Vec writes a payload of its own"):
        list(iter_records(BinaryDecoder(tds)))  # without the registry
    custom = torch_header(1, "my.Class") + i32(3, 2, 1) + string(b"k") + number(np.pi)
    assert records(custom)[0].summary == "my.Class (version 1)"
    assert records(custom)[1].summary == "table of 1 entries"
