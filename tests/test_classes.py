"""values/classes: the registry of classes with payloads of their own, and tds.Hash / tds.Vec.

The tds files are python-torchfile's, written by real Torch7 (``tests/real-world/torchfile``);
the b32 and ascii layouts are written here by hand, as ``../shared/FORMAT.md`` and tds's
``hash.lua`` / ``vec.lua`` (``__write``: ``writeLong(#self)``, then each object) lay them out.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import REAL_WORLD, f64, i32, lua_string

import streamser
from streamser import FormatError, LuaTable, TorchObject, UnsupportedValueError, speedups
from streamser.cli.main import main
from streamser.values.classes import (
    CLASS_CODECS,
    ClassCodec,
    TdsHash,
    TdsVec,
    register_class,
    unregister_class,
)

TDS = REAL_WORLD / "torchfile"
FORMATS = ["binary", "b32", "ascii"]


def _number_records(*numbers: float, long_size: int = 8) -> bytes:
    return b"".join(i32(1) + f64(n) for n in numbers)


def _binary_tds(typename: str, count: int, objects: bytes, long_size: int) -> bytes:
    long = struct.pack("<q" if long_size == 8 else "<i", count)
    return i32(4, 1) + lua_string(b"V 0") + lua_string(typename.encode()) + long + objects


def _ascii_tds(typename: str, count: int, numbers: list[int]) -> bytes:
    name = typename.encode()
    head = b"4\n1\n3\nV 0\n%d\n%s\n%d\n" % (len(name), name, count)
    return head + b"".join(b"1\n%d\n" % n for n in numbers)


HASH_ORDER = [2, 3, 10, 11, 1, 2]  # the file's pairs, in the order tds's hash wrote them


def test_tds_files_read_as_torchfile_reads_them() -> None:
    hashed = streamser.load(TDS / "tds_hash.t7")
    assert type(hashed) is TdsHash
    assert dict(hashed) == {1: 2, 2: 3, 10: 11}
    assert list(hashed) == [2, 10, 1]  # the file's order is kept
    vec = streamser.load(TDS / "tds_vec.t7")
    assert type(vec) is TdsVec
    assert vec == [123, 456]


@pytest.mark.parametrize("name", ["tds_hash", "tds_vec"])
def test_tds_files_round_trip_byte_for_byte(name: str) -> None:
    data = (TDS / f"{name}.t7").read_bytes()
    assert streamser.serialize(streamser.deserialize(data)) == data
    with speedups.pure_python():
        assert streamser.serialize(streamser.deserialize(data)) == data


@pytest.mark.parametrize("fmt", FORMATS)
def test_tds_layouts_written_by_hand(fmt: str) -> None:
    hashed = streamser.load(TDS / "tds_hash.t7")
    vec = streamser.load(TDS / "tds_vec.t7")
    if fmt == "ascii":
        want_hash = _ascii_tds("tds.Hash", 3, HASH_ORDER)
        want_vec = _ascii_tds("tds.Vec", 2, [123, 456])
    else:
        size = 4 if fmt == "b32" else 8
        want_hash = _binary_tds("tds.Hash", 3, _number_records(*HASH_ORDER), size)
        want_vec = _binary_tds("tds.Vec", 2, _number_records(123, 456), size)
    for value, want in ((hashed, want_hash), (vec, want_vec)):
        assert streamser.serialize(value, fmt) == want
        again = streamser.deserialize(want, fmt)
        assert type(again) is type(value)
        assert list(again) == list(value)
        assert streamser.serialize(again, fmt) == want


def test_tds_containers_nest_share_and_cycle() -> None:
    weight = np.arange(6.0).reshape(2, 3)
    vec = TdsVec([weight, "text", None, True])
    inner = TdsHash({"w": weight[1], 7: vec})
    vec.append(vec)  # a cycle through the vec itself
    for fmt in FORMATS:
        loaded = streamser.deserialize(streamser.serialize({"h": inner, "v": vec}, fmt), fmt)
        h, v = loaded["h"], loaded["v"]
        assert type(h) is TdsHash
        assert type(v) is TdsVec
        assert h[7] is v, fmt
        assert v[4] is v, fmt
        assert v[1:3] == ["text", None]
        np.testing.assert_array_equal(h["w"], weight[1])
        if fmt != "ascii":
            assert np.shares_memory(h["w"], v[0])


def test_tds_values_in_the_index_and_paths(tmp_path: Path) -> None:
    path = tmp_path / "vocab.t7"
    streamser.save(
        path, {"vec": TdsVec([np.ones(2), np.zeros(3)]), "hash": TdsHash({"e": np.ones(4)})}
    )
    with streamser.open(path) as f:
        paths = [t.path for t in f.tensors()]
        assert paths == ["vec[1]", "vec[2]", "hash.e"]
        assert f["vec[2]"].shape == (3,)
        assert f["hash.e"].shape == (4,)


class Pair(list[Any]):
    """A user class read and written by a codec registered in a test."""


class PairCodec(ClassCodec):
    typename = "my.Pair"
    python_type = Pair
    version = 2

    def read_head(self, payload: Any, version: int | float) -> tuple[Any, int]:
        assert payload.read_string() == b"pair"
        assert version == 2
        count = payload.read_int()
        if count == 13:
            raise ValueError("unlucky")
        return Pair(), count

    def fill(self, value: Any, objects: list[Any]) -> None:
        value.extend(objects)

    def write_head(self, value: Any, payload: Any) -> Iterator[Any]:
        payload.write_string(b"pair")
        payload.write_int(len(value))
        return iter(value)


@pytest.fixture
def pair_codec() -> Iterator[PairCodec]:
    codec = PairCodec()
    register_class(codec)
    try:
        yield codec
    finally:
        unregister_class("my.Pair")


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_registered_class_is_read_written_listed_and_indexed(
    pair_codec: PairCodec, fmt: str, tmp_path: Path
) -> None:
    value = {"p": Pair([np.arange(3.0), "b"])}
    data = streamser.serialize(value, fmt)
    loaded = streamser.deserialize(data, fmt)
    assert type(loaded["p"]) is Pair
    assert loaded["p"][1] == "b"
    assert streamser.serialize(loaded, fmt) == data
    path = tmp_path / "pair.t7"
    path.write_bytes(data)
    with streamser.open(path) as f:
        assert [t.path for t in f.tensors()] == ["p[1]"]
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        assert main(["dis", str(path)]) == 0
    assert "my.Pair (version 2), 2 objects follow" in listing.getvalue()


def test_codec_errors_name_the_class(pair_codec: PairCodec) -> None:
    data = streamser.serialize(Pair(list(range(13))))
    with pytest.raises(FormatError, match=r"payload of my\.Pair does not read: unlucky"):
        streamser.deserialize(data)


def test_unknown_class_with_its_own_payload_is_refused_clearly(tmp_path: Path) -> None:
    data = (TDS / "tds_vec.t7").read_bytes()
    codec = unregister_class("tds.Vec")
    try:
        for fmt in ("binary", None):
            for pure in (False, True):
                context = speedups.pure_python() if pure else contextlib.nullcontext()
                with context, pytest.raises(FormatError) as info:
                    streamser.deserialize(data, fmt)
                assert "tds.Vec writes a payload of its own" in str(info.value)
                assert "streamser.register_class" in str(info.value)
                assert info.value.offset == 26  # where the payload starts
        path = tmp_path / "vec.t7"
        path.write_bytes(data)
        assert main(["dis", str(path)]) == 2
        assert main(["verify", str(path)]) == 2
    finally:
        assert codec is not None
        register_class(codec)
    assert "tds.Vec" in CLASS_CODECS


def test_a_torch_object_needs_a_field_table() -> None:
    with pytest.raises(UnsupportedValueError, match=r"fields of 'nn\.Odd' must be a table"):
        streamser.serialize({"x": TorchObject("nn.Odd", 5)})
    with pytest.raises(UnsupportedValueError, match="ClassCodec"):
        streamser.serialize(TorchObject("nn.Odd", TdsVec([1])))
    ok = TorchObject("nn.Fine", [1, 2])  # a list is written as a table
    assert streamser.deserialize(streamser.serialize(ok)).fields.to_list() == [1, 2]


def test_registering_again_replaces_the_codec(pair_codec: PairCodec) -> None:
    other = PairCodec()
    assert register_class(other) is other
    assert CLASS_CODECS["my.Pair"] is other
    assert unregister_class("no.Such") is None


def test_tds_reprs() -> None:
    assert repr(TdsVec([1])) == "TdsVec([1])"
    assert repr(TdsHash({"a": 1})) == "TdsHash({'a': 1})"
    assert isinstance(TdsHash(), LuaTable)
