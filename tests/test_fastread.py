"""The compiled reader (``streamser._fastread``) against the pure-Python one it accelerates.

Every read here is done twice, with the compiled loop and inside ``speedups.pure_python()``,
and the two outcomes must be the same: values of the same types with the same keys in the
same order, arrays with the same dtype, geometry, bytes, flags and sharing, the same decoder
position and counters, the same registered objects; or the same exception (class, message,
byte offset, notes). The compiled loop must also really run: common values may not bail.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import FUZZ_FILES, mutate, values, views

import streamser
from streamser import LuaFunction, LuaTable, Storage, TorchObject, speedups
from streamser.codecs import BinaryDecoder
from streamser.graph import reader as graph_reader
from streamser.graph.reader import GraphReader
from streamser.io.arrays import address_of, root_of
from streamser.spec.limits import Limits
from streamser.values.lua import _IDENTITY_KEY, remembered_class

CORPUS = Path(__file__).resolve().parent / "corpus"
BINARY_FILES = sorted(p for p in CORPUS.glob("*.t7") if ".ascii." not in p.name)
FAST = graph_reader._FASTREAD

needs_compiled = pytest.mark.skipif(speedups.PURE, reason="STREAMSER_PURE=1 switches it off")


def test_compiled_reader_is_built() -> None:
    """CI builds the extension (a missing one would silently make streamser slow), and
    STREAMSER_PURE=1 switches it off; under that switch the comparisons below compare pure
    Python with itself."""
    assert (FAST is None) == speedups.PURE


pure_python = speedups.pure_python


# --- comparing two readings ------------------------------------------------------------------


class Same:
    """Structural equality of two readings, with identity matched one to one."""

    def __init__(self) -> None:
        self.pairs: dict[int, Any] = {}  # id(left object) -> right object
        self.reverse: dict[int, Any] = {}
        self.keep: list[Any] = []  # keeps compared objects alive, so ids stay unique

    def identical(self, left: Any, right: Any, path: str) -> bool:
        """Record left <-> right; True when the pair was compared already."""
        seen = self.pairs.get(id(left))
        if seen is not None or id(right) in self.reverse:
            assert seen is right, f"sharing differs at {path}"
            assert self.reverse[id(right)] is left, f"sharing differs at {path}"
            return True
        self.pairs[id(left)] = right
        self.reverse[id(right)] = left
        self.keep += [left, right]
        return False

    def check(self, left: Any, right: Any, path: str = "<root>") -> None:
        assert type(left) is type(right), f"{path}: {type(left)} != {type(right)}"
        if isinstance(left, float):
            assert struct.pack("<d", left) == struct.pack("<d", right), path
        elif left is None or isinstance(left, (bool, int, str, bytes)):
            assert left == right, path
        elif type(left) is object:  # the markers of hashed keys (booleans, identities)
            assert left is right, path
        elif isinstance(left, tuple):
            assert len(left) == len(right), path
            for a, b in zip(left, right, strict=True):
                self.check(a, b, path)
        elif isinstance(left, np.ndarray):
            self.array(left, right, path)
        elif not self.identical(left, right, path):
            self.container(left, right, path)

    def container(self, left: Any, right: Any, path: str) -> None:
        if isinstance(left, LuaTable):
            a, b = list(left._entries.items()), list(right._entries.items())
            assert len(a) == len(b), path
            for (hashed_a, (key_a, value_a)), (hashed_b, (key_b, value_b)) in zip(
                a, b, strict=True
            ):
                self.check(key_a, key_b, f"{path} key {key_a!r}")
                if isinstance(hashed_a, tuple) and hashed_a[0] is _IDENTITY_KEY:
                    assert hashed_a == (_IDENTITY_KEY, id(key_a)), path
                    assert hashed_b == (_IDENTITY_KEY, id(key_b)), path
                else:
                    self.check(hashed_a, hashed_b, f"{path} hashed {key_a!r}")
                self.check(value_a, value_b, f"{path}[{key_a!r}]")
        elif isinstance(left, TorchObject):
            assert (left.typename, left.version) == (right.typename, right.version), path
            self.check(left.version, right.version, path)
            self.check(left.fields, right.fields, f"{path}.fields")
        elif isinstance(left, Storage):
            assert left.typename == right.typename, path
            self.check(left.array, right.array, f"{path}.array")
        elif isinstance(left, LuaFunction):
            assert (left.bytecode, left.tag) == (right.bytecode, right.tag), path
            self.check(left.upvalues, right.upvalues, f"{path}.upvalues")
        else:  # pragma: no cover - the reader makes nothing else
            raise AssertionError(f"unexpected {type(left)} at {path}")

    def array(self, left: np.ndarray[Any, Any], right: np.ndarray[Any, Any], path: str) -> None:
        if self.identical(left, right, path):
            return
        assert left.dtype == right.dtype, path
        assert left.dtype.str == right.dtype.str, path
        assert left.dtype.byteorder == right.dtype.byteorder, path
        assert (left.shape, left.strides) == (right.shape, right.strides), path
        for flag in ("writeable", "aligned", "c_contiguous", "f_contiguous", "owndata"):
            assert getattr(left.flags, flag) == getattr(right.flags, flag), f"{path}: {flag}"
        assert type(left.base) is type(right.base), f"{path}: base"
        root_a, root_b = root_of(left), root_of(right)
        assert address_of(left) - address_of(root_a) == address_of(right) - address_of(root_b)
        assert remembered_class(root_a) == remembered_class(root_b), path
        assert (root_a is left) == (root_b is right), path
        if root_a is left:  # a storage: compare its bytes
            assert left.base is None or not isinstance(left.base, np.ndarray), path
            assert right.base is None or not isinstance(right.base, np.ndarray), path
            assert left.tobytes() == right.tobytes(), path
        else:  # a view (maybe of 2**60 overlapping elements): same geometry, same storage
            self.array(root_a, root_b, f"{path} (root)")


def same(left: Any, right: Any) -> None:
    Same().check(left, right)


def both(read: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``read(*args, **kwargs)`` with the compiled loop and in pure Python: value or exception."""

    def outcome() -> Any:
        try:
            return read(*args, **kwargs)
        except Exception as exc:
            return exc

    fast = outcome()
    with pure_python():
        slow = outcome()
    return fast, slow


def same_outcome(fast: Any, slow: Any) -> None:
    if isinstance(slow, Exception) or isinstance(fast, Exception):
        assert type(fast) is type(slow), f"{fast!r} != {slow!r}"
        assert str(fast) == str(slow)
        assert getattr(fast, "offset", None) == getattr(slow, "offset", None)
        assert getattr(fast, "__notes__", None) == getattr(slow, "__notes__", None)
    else:
        same(fast, slow)


def assert_same_reading(read: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    same_outcome(*both(read, *args, **kwargs))


@contextmanager
def counting_bails() -> Iterator[list[int]]:
    """Counts the values the compiled loop handed over to Python."""
    bails = [0]
    original = GraphReader._read_compiled

    def counted(self: GraphReader, fast: Any) -> Any:
        value = original(self, fast)
        bails[0] += value is graph_reader._BAIL
        return value

    GraphReader._read_compiled = counted  # type: ignore[method-assign]
    try:
        yield bails
    finally:
        GraphReader._read_compiled = original  # type: ignore[method-assign]


# --- readers, step by step -------------------------------------------------------------------


def reader_steps(data: Any, long_size: int, referenced: bool, **limits: int) -> list[Any]:
    """Values (or the exception) of a GraphReader read to the end, with its state after each."""
    reader = GraphReader(
        BinaryDecoder(data, long_size), referenced=referenced, limits=Limits(**limits)
    )
    decoder = reader.decoder
    steps: list[Any] = []
    while decoder.remaining() > 0 and len(steps) < 8:
        try:
            value = reader.read_object()
        except Exception as exc:
            steps.append(exc)
            break
        state = (decoder.pos, decoder.longs_read, reader._indexed, list(reader.objects))
        steps.append((value, state))
    return steps


def same_steps(fast: list[Any], slow: list[Any]) -> None:
    assert len(fast) == len(slow)
    memo = Same()  # one comparison across steps: later values share earlier objects
    for a, b in zip(fast, slow, strict=True):
        if isinstance(a, Exception) or isinstance(b, Exception):
            same_outcome(a, b)
        else:
            assert a[1] == b[1], "decoder and reader state"
            memo.check(a[0], b[0])


def assert_same_steps(data: Any, long_size: int, referenced: bool, **limits: int) -> None:
    fast = reader_steps(data, long_size, referenced, **limits)
    with pure_python():
        slow = reader_steps(data, long_size, referenced, **limits)
    same_steps(fast, slow)


# --- the corpus ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BINARY_FILES, ids=lambda p: p.name)
def test_corpus_files_read_the_same(path: Path) -> None:
    data = path.read_bytes()
    for fmt in (None, "binary", "b32"):
        for referenced in (True, False):
            assert_same_reading(streamser.deserialize, data, fmt, referenced)
            assert_same_reading(streamser.deserialize, bytearray(data), fmt, referenced)
    for mmap in (True, False):
        assert_same_reading(streamser.load, path, mmap=mmap)
    for long_size in (8, 4):
        for referenced in (True, False):
            assert_same_steps(data, long_size, referenced)


@needs_compiled
def test_common_values_do_not_bail() -> None:
    """The fast path really runs for what checkpoints hold (not only falls back)."""
    names = ["nn_linear.binary.t7", "nn_seq.binary.t7", "tensor_Float_views.binary.t7",
             "tbl_shared.binary.t7", "tbl_self.binary.t7", "custom_class.binary.t7",
             "storage_Long.b32.t7"]  # fmt: skip
    with counting_bails() as bails:
        for name in names:
            streamser.deserialize((CORPUS / name).read_bytes(), name.split(".")[1])
        records = [{"name": f"r{i}", "w": np.ones((4, 4), np.float32)} for i in range(50)]
        streamser.deserialize(streamser.serialize(records))
    assert bails == [0]


@needs_compiled
def test_functions_fall_back_to_python() -> None:
    """A function (not in the fast path) deep inside a value: the Python loop reads it all."""
    data = (CORPUS / "func_closure.binary.t7").read_bytes()
    with counting_bails() as bails:
        assert_same_reading(streamser.deserialize, data)
    assert bails[0] >= 1


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["binary", "b32"])
@given(value=values, referenced=st.booleans())
def test_round_trips_read_the_same(fmt: str, value: Any, referenced: bool) -> None:
    outer = [value, value, {"again": value}]
    data = streamser.serialize(outer, format=fmt, referenced=referenced)
    assert_same_reading(streamser.deserialize, data, fmt, referenced)
    assert_same_reading(streamser.deserialize, bytearray(data), None, referenced)


@given(group=views())
def test_views_read_the_same(group: list[np.ndarray[Any, Any]]) -> None:
    data = streamser.serialize(group)
    assert_same_reading(streamser.deserialize, data)
    assert_same_reading(streamser.deserialize, memoryview(bytearray(data)))


def test_several_values_share_the_memo() -> None:
    """Reader: later values refer back to objects of earlier ones, in both loops alike."""
    shared = {"w": np.arange(6, dtype=np.float64).reshape(2, 3)}
    out = io.BytesIO()
    with streamser.Writer(out) as writer:
        writer.write_object(shared)
        writer.write_object([shared, shared["w"][:, 1:]])
        writer.write_int(7)
        writer.write_object({"again": shared, "cuda": TorchObject("torch.CudaTensor", None)})
    data = out.getvalue()
    assert_same_steps(data, 8, True)
    assert_same_steps(data, 8, False)


def test_cuda_classes_are_remembered() -> None:
    header, i32, i64, number = TestCrafted.header, TestCrafted.i32, TestCrafted.i64, TestCrafted.num
    storage = header(2, "torch.CudaStorage") + i64(2) + b"\0" * 8
    tensor = header(1, "torch.CudaTensor") + i32(1) + i64(2, 1, 1) + storage
    empty = header(3, "torch.CudaLongTensor") + i32(0) + i64(1) + i32(0)
    data = i32(3, 9, 2) + number(1) + tensor + number(2) + empty
    fast, slow = both(streamser.deserialize, data, "binary")
    same_outcome(fast, slow)
    assert remembered_class(root_of(fast[1])).typename == "torch.CudaStorage"
    assert remembered_class(fast[2]).typename == "torch.CudaLongStorage"


# --- damaged input: the same exceptions ------------------------------------------------------


@pytest.mark.parametrize(("name", "mode"), [f for f in FUZZ_FILES if f[1] != "ascii"])
def test_mutations_fail_the_same(name: str, mode: str) -> None:
    data = (CORPUS / name).read_bytes()
    rng = random.Random(f"fastread {name}")
    for _ in range(150):
        mutated, _what = mutate(rng, data, ascii=False)
        referenced = rng.random() < 0.8
        for fmt in (mode, None):
            assert_same_reading(streamser.deserialize, mutated, fmt, referenced)
        assert_same_steps(mutated, 8 if mode == "binary" else 4, referenced)


@pytest.mark.parametrize(("name", "mode"), [f for f in FUZZ_FILES if f[1] != "ascii"])
def test_truncations_fail_the_same(name: str, mode: str) -> None:
    data = (CORPUS / name).read_bytes()
    for end in range(len(data)):
        assert_same_reading(streamser.deserialize, data[:end], mode)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_depth": 0}, {"max_depth": 1}, {"max_depth": 2}, {"max_objects": 0},
        {"max_objects": 3}, {"max_table": 0}, {"max_table": 2}, {"max_string": 0},
        {"max_string": 4},
    ],
)  # fmt: skip
@pytest.mark.parametrize("name", ["nn_seq.binary.t7", "tbl_mixed.b32.t7", "nn_linear.b32.t7"])
def test_limits_fail_the_same(name: str, limits: dict[str, int]) -> None:
    data = (CORPUS / name).read_bytes()
    assert_same_reading(streamser.deserialize, data, None, **limits)
    assert_same_steps(data, 4 if ".b32." in name else 8, True, **limits)


class TestCrafted:
    """Hand-made inputs at the edges of the fast path: geometry, keys, versions, memo."""

    @staticmethod
    def i32(*values: int) -> bytes:
        return struct.pack(f"<{len(values)}i", *values)

    @staticmethod
    def i64(*values: int) -> bytes:
        return struct.pack(f"<{len(values)}q", *values)

    @staticmethod
    def num(value: float) -> bytes:
        return struct.pack("<id", 1, value)

    @staticmethod
    def string(raw: bytes, tag: bool = True) -> bytes:
        return (struct.pack("<i", 2) if tag else b"") + struct.pack("<i", len(raw)) + raw

    @classmethod
    def header(cls, index: int, typename: str, version: bytes = b"V 1") -> bytes:
        name = cls.string(typename.encode(), tag=False)
        return cls.i32(4, index) + (cls.string(version, tag=False) if version else b"") + name

    @classmethod
    def tensor(cls, sizes: list[int], strides: list[int], offset: int, count: int = 6) -> bytes:
        storage = cls.header(2, "torch.DoubleStorage") + cls.i64(count)
        storage += struct.pack(f"<{count}d", *range(count))
        geometry = cls.i32(len(sizes)) + cls.i64(*sizes, *strides, offset)
        return cls.header(1, "torch.DoubleTensor") + geometry + storage

    @pytest.mark.parametrize(
        ("sizes", "strides", "offset"),
        [
            ([2, 3], [3, 1], 1), ([3, 2], [1, 3], 1), ([6], [1], 1), ([2], [1], 5),
            ([1, 3], [99, 1], 4), ([2, 1], [3, 7], 1), ([3], [0], 1), ([2, 2], [0, 1], 3),
            ([], [], 1), ([], [], 7), ([], [], 8), ([2, 0], [1, 1], 1), ([0], [1], 7),
            ([7], [1], 1), ([2], [6], 1), ([2], [1], 0), ([2], [-1], 2), ([-2], [1], 1),
            ([1], [2**62], 1), ([2**40, 2**40], [0, 0], 1), ([2**62, 4], [0, 0], 1),
            ([2], [2**62], 1), ([2**40], [0], 1), ([1] * 64, [1] * 64, 1), ([1] * 65, [1] * 65, 1),
            ([2, 3], [3, 1], 2**63 - 1), ([2, 3], [3, 1], -(2**63)),
        ],
    )  # fmt: skip
    def test_geometry(self, sizes: list[int], strides: list[int], offset: int) -> None:
        data = self.tensor(sizes, strides, offset)
        assert_same_reading(streamser.deserialize, data, "binary")
        assert_same_reading(streamser.deserialize, bytearray(data), "binary")

    @pytest.mark.parametrize(
        "record",
        [
            "tensor_no_storage", "empty_no_storage", "sized_no_storage", "storage_self",
            "tensor_self", "tensor_in_storage", "object_as_storage", "wrong_storage_class",
            "compatible_cuda_storage", "shared_storage",
            "shared_storage_other_type", "storage_zero", "long_b32",
        ],
    )  # fmt: skip
    def test_tensor_records(self, record: str) -> None:
        header, i32, i64 = self.header, self.i32, self.i64
        geometry = i32(1) + i64(2, 1, 1)
        cuda = header(2, "torch.CudaStorage") + i64(2) + b"\0" * 8
        double = header(2, "torch.DoubleStorage") + i64(2) + b"\0" * 16
        tensor = header(1, "torch.FloatTensor") + geometry
        records = {
            "tensor_no_storage": header(1, "torch.FloatTensor") + i32(0, 0) + i64(1) + i32(0),
            "empty_no_storage": header(1, "torch.ByteTensor")
            + i32(2)
            + i64(0, 3, 1, 1, 1)
            + i32(0),
            "sized_no_storage": tensor + i32(0),
            "storage_self": tensor + i32(4, 1),
            "tensor_self": tensor + i32(4, 2) + b"V 1",
            "tensor_in_storage": tensor + header(2, "torch.FloatTensor") + geometry + i32(0),
            "object_as_storage": tensor + header(2, "nn.Linear") + i32(3, 3, 0),
            "wrong_storage_class": tensor + double,
            "compatible_cuda_storage": tensor + cuda,
            "shared_storage": b"".join(
                [
                    *(i32(3, 1, 2), self.num(1), header(2, "torch.FloatTensor"), geometry),
                    *(header(3, "torch.FloatStorage"), i64(2), b"\0" * 8, self.num(2)),
                    *(header(4, "torch.FloatTensor"), geometry, i32(4, 3)),
                ]
            ),
            "shared_storage_other_type": i32(3, 1, 2)
            + self.num(1)
            + header(2, "torch.FloatTensor")
            + geometry
            + header(3, "torch.FloatStorage")
            + i64(2)
            + b"\0" * 8
            + self.num(2)
            + header(4, "torch.IntTensor")
            + geometry
            + i32(4, 3),
            "storage_zero": header(1, "torch.HalfStorage") + i64(0),
            "long_b32": header(1, "torch.LongStorage") + i64(3) + i64(-1, 2**40, 5),
        }
        data = records[record]
        for fmt in ("binary", "b32", None):
            assert_same_reading(streamser.deserialize, data, fmt)

    @pytest.mark.parametrize(
        "version", [b"V 1", b"V 0", b"V 9", b"V 10", b"V 0x1f", b"V x", b"V ", b"torch.Foo", b""]
    )
    @pytest.mark.parametrize("typename", ["nn.Linear", "torch.FloatStorage", "\udcff"])
    def test_class_headers(self, version: bytes, typename: str) -> None:
        name = typename.encode("utf-8", "surrogateescape")
        body = self.i64(1) + b"\0" * 4 if typename == "torch.FloatStorage" else self.i32(3, 2, 0)
        data = self.i32(4, 1) + self.string(version, tag=False) + self.string(name, tag=False)
        if version == b"torch.Foo":
            data = self.i32(4, 1) + self.string(version, tag=False)
        assert_same_reading(streamser.deserialize, data + body, "binary")

    @pytest.mark.parametrize(
        "key",
        [
            "nan", "nil", "minus_zero", "float", "int", "bool", "bytes", "table", "tensor",
            "duplicate", "own_table",
        ],
    )  # fmt: skip
    def test_table_keys(self, key: str) -> None:
        i32, number, string = self.i32, self.num, self.string
        keys = {
            "nan": number(float("nan")),
            "nil": i32(0),
            "minus_zero": number(-0.0),
            "float": number(0.5),
            "int": number(3.0),
            "bool": i32(5, 1),
            "bytes": string(b"\xff\xfe"),
            "table": i32(3, 2, 0),
            "tensor": self.header(2, "torch.ByteStorage") + self.i64(1) + b"\x07",
            "duplicate": string(b"a") + number(1) + string(b"a"),
            "own_table": i32(3, 1),
        }
        entries = 2 if key == "duplicate" else 1
        data = i32(3, 1, entries) + number(0) + number(1) + keys[key] + string(b"value")
        data = i32(3, 1, entries + 1) + data[12:]
        assert_same_reading(streamser.deserialize, data, "binary")

    @pytest.mark.parametrize(
        "raw", [b"", b"plain", "\u00e9\u4e2d".encode(), b"\xff", b"a\0b", b"\xed\xa0\x80"]
    )
    def test_strings(self, raw: bytes) -> None:
        assert_same_reading(streamser.deserialize, self.string(raw), "binary")

    @pytest.mark.parametrize(
        "value",
        [0.0, -0.0, 1.0, -1.0, 0.5, 2.0**53, -(2.0**53), 2.0**53 + 2, 1e300, float("inf"),
         -float("inf"), float("nan"), -float("nan"), 5e-324, 123456789.0],
    )  # fmt: skip
    def test_numbers(self, value: float) -> None:
        assert_same_reading(streamser.deserialize, self.num(value), "binary")
        nan = struct.pack("<iQ", 1, 0x7FF0000000000001)  # a signalling NaN payload
        assert_same_reading(streamser.deserialize, nan, "binary")

    @pytest.mark.parametrize("flag", [0, 1, 2, -1])
    def test_booleans(self, flag: int) -> None:
        assert_same_reading(streamser.deserialize, self.i32(5, flag), "binary")

    def test_back_reference_to_a_table_in_progress(self) -> None:
        data = self.i32(3, 1, 1) + self.string(b"me") + self.i32(3, 1)
        assert_same_reading(streamser.deserialize, data, "binary")
        data = self.i32(3, 1, 1) + self.string(b"me") + self.i32(4, 1)
        assert_same_reading(streamser.deserialize, data, "binary")


@needs_compiled
def test_reader_state_is_restored_after_a_bail() -> None:
    """A bail deep inside a value leaves no index registered by the compiled loop."""
    data = (CORPUS / "func_closure.binary.t7").read_bytes()
    reader = GraphReader(BinaryDecoder(data, 8))
    assert reader._read_compiled(FAST) is graph_reader._BAIL
    assert (reader.decoder.pos, reader.decoder.longs_read, reader._indexed) == (0, 0, 0)
    assert reader.objects == {}
