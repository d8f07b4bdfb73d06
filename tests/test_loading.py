"""graph/loading: what an input is (plain, zstd, seekable zstd), its format, one value read."""

from __future__ import annotations

import numpy as np
import pytest
from support import CORPUS, i32, i64, number, storage_record

import streamser
from streamser import AmbiguousFormatError, FormatError
from streamser.graph.loading import Framed, Plain, detect, open_input, read_buffer
from streamser.spec.format import FORMATS
from streamser.spec.limits import Limits

LIMITS = Limits()


def test_inputs_are_unwrapped_once_for_every_reader() -> None:
    data = (CORPUS / "nn_linear.b32.t7").read_bytes()
    plain = open_input(data, 0, LIMITS)
    assert isinstance(plain, Plain)
    assert not plain.compressed
    seekable = streamser.serialize(streamser.deserialize(data), "b32", compress="zstd")
    framed = open_input(seekable, 0, LIMITS, lazy=True)
    assert isinstance(framed, Framed)
    assert framed.head == data[: len(framed.head)]
    framed.close()
    whole = open_input(seekable, 0, LIMITS)  # not lazy: decompressed
    assert isinstance(whole, Plain)
    assert whole.compressed
    assert bytes(whole.buffer) == data
    ascii = streamser.serialize(streamser.deserialize(data), "ascii", compress="zstd")
    assert isinstance(open_input(ascii, 0, LIMITS, lazy=True), Plain)  # ascii: read whole
    assert isinstance(open_input(seekable, 0, LIMITS, lazy=True, format="ascii"), Plain)


def test_detection_rules() -> None:
    def attempt(decoder: object) -> int:
        return streamser.graph.reader.GraphReader(decoder).read_object()  # type: ignore[arg-type]

    no_longs = i32(3, 1, 1) + number(1) + number(2)
    fmt, value, _ = detect(Plain(no_longs), None, attempt)
    assert fmt.name == "binary"  # long size never mattered
    assert value[1] == 2
    b32 = (CORPUS / "nn_linear.b32.t7").read_bytes()
    assert detect(Plain(b32), None, attempt)[0].name == "b32"
    assert detect(Plain(b"1\n5\n"), None, attempt)[0].name == "ascii"
    assert detect(Plain(b32), FORMATS["b32"], attempt)[0].name == "b32"
    both = storage_record(1, "torch.LongStorage", 1, i64(5))  # b32 would leave bytes unread
    assert detect(Plain(both), None, attempt)[0].name == "binary"
    with pytest.raises(FormatError) as info:
        detect(Plain(i32(3, 1, 1) + i32(99)), None, attempt)
    assert "reading it as b32" in str(info.value.__notes__)


def test_an_ambiguous_input_asks_for_a_format() -> None:
    data = storage_record(1, "torch.LongStorage", 0, bytes(12))  # bytes left either way
    with pytest.raises(AmbiguousFormatError, match="pass format="):
        streamser.deserialize(data)


def test_readings_carry_the_index_and_the_frames() -> None:
    data = streamser.serialize({"w": np.ones(3)})
    reading = read_buffer(data, 0, None, referenced=True, limits=LIMITS, indexed=True)
    assert reading.index is not None
    assert reading.end == len(data)
    assert [place for _node, place, _value, _storage in reading.index.entries()] == ["w"]
    assert read_buffer(data, 0, None, referenced=True, limits=LIMITS).index is None
    assert read_buffer(data, 0, None, referenced=True, limits=LIMITS, lazy=True).source is None
    seekable = streamser.serialize({"w": np.ones(3)}, compress="zstd")
    lazy = read_buffer(seekable, 0, None, referenced=True, limits=LIMITS, indexed=True, lazy=True)
    assert lazy.source is not None
    assert lazy.index is not None
    assert read_buffer(seekable, 0, None, referenced=True, limits=LIMITS).source is None
