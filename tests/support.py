"""Helpers shared by the test modules (which never import each other).

* where the test data is: the corpus, the real-world files;
* bytes written by hand, record by record, with the layout of ``../shared/FORMAT.md``;
* the random corruptions and crafted inputs the error tests and the compiled reader share;
* hypothesis strategies for values, tensors and views;
* the corpus oracle: a loaded value checked against the JSON description of its file.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import random
import re
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import streamser
from streamser import (
    FormatError,
    LuaFunction,
    LuaTable,
    Storage,
    StreamserError,
    TorchObject,
    TruncatedError,
)
from streamser.io.compression import SeekableZstdWriter

TESTS = Path(__file__).resolve().parent
CORPUS = TESTS / "corpus"
SHARED = TESTS.parent.parent / "shared"  # ../shared beside the repository, as in CI
SHARED_CORPUS = SHARED / "corpus"
REAL_WORLD = TESTS / "real-world"


def real_world(folder: str) -> list[Path]:
    """The files of ``tests/real-world/<folder>`` (unchanged copies of ``../shared``'s), or of
    ``../shared/real-world/<folder>`` if the copy is absent."""
    here = REAL_WORLD / folder
    source = here if here.is_dir() else SHARED / "real-world" / folder
    return sorted(p for p in source.iterdir() if p.is_file())


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Turn a hang into a ``TimeoutError`` (POSIX main thread only; elsewhere a no-op)."""
    usable = hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
    if not usable or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"no answer within {seconds} s (a hang?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- bytes written by hand (../shared/FORMAT.md) -----------------------------------------------


def i32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def i64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def f64(value: float) -> bytes:
    return struct.pack("<d", value)


def lua_string(raw: bytes) -> bytes:
    """A string payload (length + bytes), without the type tag."""
    return i32(len(raw)) + raw


def torch_header(index: int, typename: str) -> bytes:
    return i32(4, index) + lua_string(b"V 1") + lua_string(typename.encode())


def storage_record(index: int, typename: str, count: int, payload: bytes = b"") -> bytes:
    return torch_header(index, typename) + i64(count) + payload


def float_storage(index: int = 2, values: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)) -> bytes:
    payload = struct.pack(f"<{len(values)}f", *values)
    return storage_record(index, "torch.FloatStorage", len(values), payload)


def tensor_record(
    index: int,
    sizes: list[int],
    strides: list[int],
    offset_plus_one: int,
    storage: bytes,
    typename: str = "torch.FloatTensor",
) -> bytes:
    return (
        torch_header(index, typename)
        + i32(len(sizes))
        + i64(*sizes)
        + i64(*strides)
        + i64(offset_plus_one)
        + storage
    )


def number(value: float) -> bytes:
    return i32(1) + f64(value)


def string(raw: bytes) -> bytes:
    return i32(2) + lua_string(raw)


# --- corruptions and crafted inputs --------------------------------------------------------------

# (corpus file, the format it was written in)
TRUNCATION_FILES = [
    ("nn_linear.binary.t7", "binary"),
    ("nn_linear.b32.t7", "b32"),
    ("nn_linear.ascii.t7", "ascii"),
    ("tensor_Float_views.binary.t7", "binary"),
    ("tensor_Float_views.ascii.t7", "ascii"),
    ("func_closure.binary.t7", "binary"),
    ("func_closure.ascii.t7", "ascii"),
    ("tbl_mixed.ascii.t7", "ascii"),
    ("tbl_mixed.b32.t7", "b32"),
    ("custom_class.binary.t7", "binary"),
]
FUZZ_FILES = [
    *TRUNCATION_FILES,
    ("tbl_self.binary.t7", "binary"),
    ("tbl_shared.ascii.t7", "ascii"),
    ("tensor_Half_views.binary.t7", "binary"),
    ("tensor_Half_views.ascii.t7", "ascii"),
    ("storage_Long.b32.t7", "b32"),
    ("func_shared_upvalue.binary.t7", "binary"),
]


_INT_EDGES = (0, 1, -1, 3, 4, 8, 255, 2**16, 2**30, 2**31 - 1, -(2**31))
_ASCII_TOKENS = (
    b"-1",
    b"0",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"nan",
    b"-nan",
    b"inf",
    b"0x1p4",
    b"99999999999999999999",
    b"-99999999999999999999",
    b"2147483648",
    b"9223372036854775808",
    b"1.5",
    b"x",
    b"",
)
_NUMBER_TOKEN = re.compile(rb"[-+]?[0-9][0-9.eE+-]*")


def mutate(rng: random.Random, data: bytes, ascii: bool) -> tuple[bytes, str]:
    """One random corruption of ``data`` and a description of it."""
    out = bytearray(data)
    kind = rng.randrange(6 if ascii else 5)
    pos = rng.randrange(len(out))
    if kind == 0:
        bit = rng.randrange(8)
        out[pos] ^= 1 << bit
        what = f"flip bit {bit} of byte {pos}"
    elif kind == 1:
        out[pos] = rng.randrange(256)
        what = f"byte {pos} := {out[pos]:#04x}"
    elif kind == 2:
        value = rng.choice(_INT_EDGES)
        out[pos : pos + 4] = struct.pack("<i", value)
        what = f"int32 {value} at byte {pos}"
    elif kind == 3:
        count = rng.randrange(1, 9)
        del out[pos : pos + count]
        what = f"delete {count} bytes at {pos}"
    elif kind == 4:
        spots = [rng.randrange(len(out)) for _ in range(rng.randrange(2, 9))]
        for spot in spots:
            out[spot] = rng.randrange(256)
        what = f"random bytes at {spots}"
    else:
        tokens = list(_NUMBER_TOKEN.finditer(data))
        token = rng.choice(tokens)
        new = rng.choice(_ASCII_TOKENS)
        out[token.start() : token.end()] = new
        what = f"number {token.group()!r} at byte {token.start()} := {new!r}"
    return bytes(out), what


CRAFTED: list[Any] = [
    pytest.param(
        storage_record(1, "torch.FloatStorage", 10**15, bytes(40)),
        FormatError,
        "1000000000000000",
        id="storage-1e15-elements",
    ),
    pytest.param(
        storage_record(1, "torch.DoubleStorage", 2**63 - 1, bytes(40)),
        FormatError,
        "",
        id="storage-max-long-elements",
    ),
    pytest.param(
        storage_record(1, "torch.FloatStorage", -5, bytes(40)),
        FormatError,
        "-5",
        id="storage-negative-size",
    ),
    pytest.param(i32(2, -1) + b"abc", FormatError, "negative", id="string-negative-length"),
    pytest.param(i32(2, 2**31 - 1) + b"abc", TruncatedError, "2147483647", id="string-huge"),
    pytest.param(
        i32(3, 1, 1) + string(b"k") + i32(2, 2**31 - 1) + b"abc",
        TruncatedError,
        "2147483647",
        id="string-huge-in-table",
    ),
    pytest.param(i32(3, 1, 2**30) + bytes(40), FormatError, "1073741824", id="table-2**30"),
    pytest.param(i32(3, 1, -1) + bytes(40), FormatError, "-1", id="table-negative-count"),
    pytest.param(i32(8, 1, 2**31 - 1) + bytes(8), TruncatedError, "2147483647", id="function-huge"),
    pytest.param(i32(8, 1, -7) + bytes(8), FormatError, "negative", id="function-negative"),
    pytest.param(
        i32(4, 1, 2**31 - 1) + bytes(8), TruncatedError, "2147483647", id="class-name-huge"
    ),
    pytest.param(
        tensor_record(1, [-1], [1], 1, float_storage()), FormatError, "negative", id="size<0"
    ),
    pytest.param(
        tensor_record(1, [2], [-1], 1, float_storage()), FormatError, "negative", id="stride<0"
    ),
    pytest.param(
        tensor_record(1, [2, 2], [3, 1], 1, float_storage()),
        FormatError,
        "storage",
        id="stride-outside-storage",
    ),
    pytest.param(
        tensor_record(1, [2, 2], [2**62, 1], 1, float_storage()),
        FormatError,
        "storage",
        id="stride-huge",
    ),
    pytest.param(
        tensor_record(1, [2**40, 2**40], [0, 0], 1, float_storage()),
        FormatError,
        "",
        id="size-huge-stride-0",
    ),
    pytest.param(
        tensor_record(1, [2], [1], 10, float_storage()),
        FormatError,
        "storage",
        id="offset-past-end",
    ),
    pytest.param(
        tensor_record(1, [1], [1], 5, float_storage()),
        FormatError,
        "storage",
        id="offset-at-end",
    ),
    pytest.param(
        tensor_record(1, [1], [1], -3, float_storage()),
        FormatError,
        "storage",
        id="offset-negative",
    ),
    pytest.param(
        torch_header(1, "torch.FloatTensor") + i32(2**31 - 1) + bytes(64),
        FormatError,
        "dimensions",
        id="ndim-huge",
    ),
    pytest.param(
        torch_header(1, "torch.FloatTensor") + i32(-2) + bytes(64),
        FormatError,
        "dimensions",
        id="ndim-negative",
    ),
    pytest.param(
        tensor_record(1, [3], [1], 1, i32(0)), FormatError, "storage", id="sized-without-storage"
    ),
    pytest.param(i32(9), FormatError, "", id="tag-9"),
    pytest.param(i32(0x7FFFFFFF), FormatError, "2147483647", id="tag-int-max"),
    pytest.param(i32(-1), FormatError, "-1", id="tag-negative"),
    pytest.param(
        tensor_record(1, [2], [1], 1, i32(3, 2, 0)), FormatError, "storage", id="storage-is-table"
    ),
    pytest.param(
        tensor_record(1, [2], [1], 1, tensor_record(2, [2], [1], 1, float_storage(3))),
        FormatError,
        "storage",
        id="storage-is-tensor",
    ),
    pytest.param(
        tensor_record(1, [2], [1], 1, torch_header(2, "my.Thing") + i32(3, 3, 0)),
        FormatError,
        "storage",
        id="storage-is-custom-object",
    ),
    pytest.param(
        tensor_record(
            1,
            [2],
            [1],
            1,
            storage_record(2, "torch.DoubleStorage", 2, struct.pack("<2d", 1, 2)),
        ),
        FormatError,
        "DoubleStorage",
        id="storage-of-other-type",
    ),
    pytest.param(
        tensor_record(1, [2], [1], 1, i32(4, 1)), FormatError, "", id="storage-is-tensor-itself"
    ),
    pytest.param(
        i32(3, 1, 1) + string(b"k") + i32(3, 99) + b"\xff\xff\xff\x7f\x01\x02",
        FormatError,
        "",
        id="unseen-table-index-then-garbage",
    ),
    pytest.param(
        i32(3, 1, 1) + string(b"k") + i32(4, 42) + b"\x01\x02\x03",
        FormatError,
        "",
        id="unseen-object-index-then-garbage",
    ),
    pytest.param(i32(3, 1, 1) + i32(0) + number(1), FormatError, "nil", id="nil-key"),
    pytest.param(i32(3, 1, 1) + number(math.nan) + number(1), FormatError, "NaN", id="nan-key"),
    pytest.param(b"PK\x03\x04" + bytes(range(60)), StreamserError, "", id="zip"),
    pytest.param(b"\x28\xb5\x2f\xfd" + bytes(range(60)), StreamserError, "", id="zstd"),
    pytest.param(b"", TruncatedError, "", id="empty"),
    pytest.param(b"\x01\x00", TruncatedError, "", id="half-a-tag"),
]


# --- hypothesis strategies -----------------------------------------------------------------------

DTYPES = ["u1", "i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8"]
EXACT = 2**53

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-EXACT, EXACT),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
keys = st.one_of(
    st.text(max_size=8),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=True),
    st.booleans(),
)


def arrays(dtype: str) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    return hnp.arrays(
        np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    )


@st.composite
def views(draw: st.DrawFn) -> list[np.ndarray[Any, Any]]:
    """A base array and a few views of it: slices with positive steps, transposes, selections."""
    base = draw(arrays(draw(st.sampled_from(DTYPES))).filter(lambda a: a.ndim >= 1 and a.size > 0))
    out = [base]
    for _ in range(draw(st.integers(1, 3))):
        view = base
        for axis in range(base.ndim):
            n = base.shape[axis]
            start = draw(st.integers(0, n - 1))
            stop = draw(st.integers(start + 1, n))
            step = draw(st.integers(1, 2))
            index = [slice(None)] * base.ndim
            index[axis] = slice(start, stop, step)
            view = view[tuple(index)]
        if draw(st.booleans()):
            view = view.T
        out.append(view)
    return out


tensors = st.one_of(*(arrays(d) for d in DTYPES))
values = st.recursive(
    st.one_of(scalars, tensors),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=12,
)


# --- the corpus oracle -------------------------------------------------------------------------

ELEMENT_TYPES = {
    "Byte": np.uint8, "Char": np.int8, "Short": np.int16, "Int": np.int32,
    "Long": np.int64, "Float": np.float32, "Double": np.float64, "Half": np.float16,
}  # fmt: skip
Node = dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One row of MANIFEST.tsv."""

    file: str
    load_mode: str
    json: str
    writer: str
    referenced: bool

    @property
    def path(self) -> Path:
        return CORPUS / self.file

    def oracle(self) -> Node:
        oracle: Node = json.loads((CORPUS / self.json).read_text(encoding="utf-8"))
        return oracle

    def load(self, format: str | None, *, mmap: bool = True) -> Any:
        if self.writer == "torch.serialize":
            return streamser.deserialize(self.path.read_bytes(), format, self.referenced)
        return streamser.load(self.path, format, self.referenced, mmap=mmap)


def _manifest() -> list[Case]:
    with open(CORPUS / "MANIFEST.tsv", newline="", encoding="utf-8") as fileobj:
        rows = list(csv.DictReader(fileobj, delimiter="\t"))
    assert {row["referenced"] for row in rows} <= {"true", "false"}
    return [Case(**{**row, "referenced": row["referenced"] == "true"}) for row in rows]


CASES = _manifest()


def case_params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=case.file) for case in cases]


# --- element strings, as the oracle prints them (README: STR) ----------------------------------


def _layout(sign: str, digits: str, exponent: int) -> str:
    """17 significant ``digits`` laid out as C's ``%.17g`` lays them out."""
    if -4 <= exponent < 17:
        point = exponent + 1
        body = "0." + "0" * -point + digits if point <= 0 else f"{digits[:point]}.{digits[point:]}"
        return sign + body.rstrip("0").rstrip(".")
    fraction = digits[1:].rstrip("0")
    return f"{sign}{digits[0]}{'.' if fraction else ''}{fraction}e{exponent:+03d}"


def _lua_g17(value: float) -> str:
    """``string.format("%.17g", value)`` as LuaJIT 2.1, which printed the oracle, prints it.

    LuaJIT's own formatter rounds an exact tie away from zero where C and Python round it to
    even (LuaJIT issue #1363); float32 data has such ties (2992 of bigfloat's 10^6 values).
    """
    text = format(value, ".17g")
    if not math.isfinite(value):
        return text  # "nan" (either sign), "inf", "-inf"
    wide = format(value, ".17e")  # 18 significant digits: exact when the value is a tie at 17
    mantissa, exponent = wide.split("e")
    if mantissa[-1] != "5" or mantissa[-2] in "13579" or Decimal(wide) != Decimal(value):
        return text  # no tie, or one that rounding to even also rounds away from zero
    digits = mantissa.lstrip("-").replace(".", "")[:17]
    sign = "-" if mantissa[0] == "-" else ""
    return _layout(sign, digits[:-1] + str(int(digits[-1]) + 1), int(exponent))


def _element_strings(arr: np.ndarray[Any, Any]) -> list[str]:
    """The elements of a view in logical row-major order, as oracle strings."""
    flat = arr.ravel(order="C")
    if flat.dtype.kind in "iu":
        return [str(v) for v in flat.tolist()]
    return [_lua_g17(v) for v in flat.astype(np.float64).tolist()]


@functools.cache
def _fnv1a32(data: bytes) -> str:
    digest = 0x811C9DC5
    for byte in data:
        digest = ((digest ^ byte) * 16777619) & 0xFFFFFFFF
    return f"{digest:08x}"


def _first_diff(got: Any, want: Any) -> int | None:
    """Index of the first difference of two sequences (the shorter length if one is a prefix)."""
    index = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    return min(len(got), len(want)) if index is None and len(got) != len(want) else index


def _dtype(typename: str) -> Any:
    """``torch.FloatTensor`` / ``torch.FloatStorage`` -> float32."""
    return ELEMENT_TYPES[
        typename.removeprefix("torch.").removesuffix("Tensor").removesuffix("Storage")
    ]


def _flat(obj: Any) -> Any:
    """The identity of a storage: a stand-alone Storage's array, or a tensor's base array."""
    return obj.array if isinstance(obj, Storage) else obj


def _expected_scalar(node: Node) -> Any:
    """The Python value of a JSON nil, boolean, number or string node."""
    if node["t"] == "string":
        raw = bytes.fromhex(node["hex"])
        assert len(raw) == node["len"], "the oracle's hex and len disagree"
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw
    if node["t"] == "number":
        number = float(node["v"])
        integral = number.is_integer() and abs(number) <= 2**53 and node["v"] != "-0"
        return int(number) if integral else number
    return node.get("v")


def _lookup(key: Any) -> tuple[type, Any] | None:
    """A plain Lua key as one hashable form (1 and 1.0 are one key); None for reference types."""
    if isinstance(key, bool):
        return (bool, key)
    if isinstance(key, (int, float)):
        return (float, float(key))
    if isinstance(key, str):
        return (bytes, key.encode("utf-8"))
    return (bytes, key) if isinstance(key, bytes) else None


def _label(node: Node, index: int) -> str:
    return repr(node["text"]) if "text" in node else str(node.get("v", f"#{index}"))


# --- the walker ---------------------------------------------------------------------------------


class Walker:
    """Checks a loaded value against a JSON node; JSON ids are matched one to one with objects."""

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}  # JSON id -> object (a storage's array under a tensor)
        self.owner: dict[int, int] = {}  # id(object) -> JSON id: distinct ids, distinct objects
        self.uvid_to_id: dict[Any, Any] = {}
        self.id_to_uvid: dict[Any, Any] = {}
        self.views: dict[int, tuple[np.ndarray[Any, Any], ...]] = {}  # storage id -> tensors

    def check(self, node: Node, value: Any, path: str) -> None:
        self.DISPATCH[node["t"]](self, node, value, path)

    def _bind(self, node: Node, obj: Any, path: str) -> None:
        assert node["id"] not in self.memo, f"{path}: JSON id {node['id']} defined twice"
        other = self.owner.get(id(_flat(obj)))
        assert other is None, f"{path}: same object as JSON id {other}, expected a distinct one"
        self.memo[node["id"]] = obj
        self.owner[id(_flat(obj))] = node["id"]

    def _scalar(self, node: Node, value: Any, path: str) -> None:
        want = _expected_scalar(node)
        shown = f"{path}: expected {type(want).__name__} {want!r:.60}, got {value!r:.60}"
        assert type(value) is type(want), shown
        if not isinstance(want, float):
            assert value == want, shown
        elif math.isnan(want):
            assert math.isnan(value), shown
        else:  # exact, and the sign of zero too
            assert (value, math.copysign(1, value)) == (want, math.copysign(1, want)), shown

    def _ref(self, node: Node, value: Any, path: str) -> None:
        assert node["id"] in self.memo, f"{path}: ref to JSON id {node['id']} before its definition"
        want = self.memo[node["id"]]
        if not (isinstance(value, Storage) and isinstance(want, Storage)):
            value, want = _flat(value), _flat(want)  # a storage seen alone and under a tensor
        assert value is want, f"{path}: expected the object of JSON id {node['id']}, got a copy"

    def _table(self, node: Node, value: Any, path: str) -> None:
        assert isinstance(value, LuaTable), f"{path}: expected LuaTable, got {type(value)}"
        self._bind(node, value, path)
        self._entries(node["entries"], value, path)

    def _object(self, node: Node, value: Any, path: str) -> None:
        assert isinstance(value, TorchObject), f"{path}: expected TorchObject, got {type(value)}"
        assert value.typename == node["typename"], f"{path}: typename {value.typename!r}"
        assert value.version == node["version"], f"{path}: version {value.version!r}"
        assert isinstance(value.fields, LuaTable), f"{path}: fields are {type(value.fields)}"
        self._bind(node, value, path)
        self._entries(node["fields"], value.fields, f"{path}<{node['typename']}>")

    def _entries(self, entries: list[list[Node]], table: LuaTable, path: str) -> None:
        """JSON entries are sorted, the table keeps the file's order: match them by key."""
        assert len(table) == len(entries), f"{path}: {len(table)} entries, expected {len(entries)}"
        scalars, others = {}, []
        for key, value in table.items():
            lookup = _lookup(key)
            if lookup is None:
                others.append((key, value))
            else:
                scalars[lookup] = (key, value)
        for index, (key_node, value_node) in enumerate(entries):
            key_path = f"{path}.keys[{index}]"
            plain = key_node["t"] in ("number", "string", "boolean")
            lookup = _lookup(_expected_scalar(key_node)) if plain else None
            if lookup is None:
                key, value = others.pop(self._match_key(key_node, others, key_path))
            else:
                assert lookup in scalars, f"{key_path}: key {_label(key_node, index)} missing"
                key, value = scalars.pop(lookup)
                self.check(key_node, key, key_path)
            self.check(value_node, value, f"{path}[{_label(key_node, index)}]")

    def _match_key(self, node: Node, candidates: list[tuple[Any, Any]], path: str) -> int:
        """Index of the table key matching ``node``; only a match keeps its bindings."""
        for index, (key, _value) in enumerate(candidates):
            trial = object.__new__(Walker)
            trial.__dict__.update({name: dict(part) for name, part in vars(self).items()})
            try:
                trial.check(node, key, path)
            except AssertionError:
                continue
            vars(self).update(vars(trial))
            return index
        raise AssertionError(f"{path}: no table key matches this {node['t']} node")

    def _storage(self, node: Node, value: Any, path: str) -> None:
        assert isinstance(value, Storage), f"{path}: expected Storage, got {type(value)}"
        assert value.typename == node["typename"], f"{path}: typename {value.typename!r}"
        assert len(value) == node["size"], f"{path}: size {len(value)}, expected {node['size']}"
        self._bind(node, value, path)
        self._storage_array(node, value.array, path)

    def _storage_array(self, node: Node, array: Any, path: str) -> None:
        assert isinstance(array, np.ndarray), f"{path}: storage data is {type(array)}"
        assert array.dtype == _dtype(node["typename"]), f"{path}: dtype {array.dtype}"
        assert array.shape == (node["size"],), f"{path}: shape {array.shape}, not flat"
        self._values(node, array, path)

    def _tensor(self, node: Node, value: Any, path: str) -> None:
        assert type(value) is np.ndarray, f"{path}: expected ndarray, got {type(value)}"
        assert value.dtype == _dtype(node["typename"]), f"{path}: dtype {value.dtype}"
        shape, strides = tuple(node["size"]), tuple(s * value.itemsize for s in node["stride"])
        if node["ndim"] == 0:
            shape, strides = (0,), value.strides  # an empty Torch tensor: a (0,) array
        assert value.shape == shape, f"{path}: shape {value.shape}, expected {shape}"
        assert value.strides == strides, f"{path}: strides {value.strides}, expected {strides}"
        assert value.size == node["nelement"], f"{path}: nelement {value.size}"
        self._bind(node, value, path)
        self._values(node, value, path)
        if node["storage"]["t"] != "nil":
            self._tensor_storage(node, value, f"{path}.storage")

    def _tensor_storage(self, tensor: Node, value: np.ndarray[Any, Any], path: str) -> None:
        node, base = tensor["storage"], value.base
        assert isinstance(base, np.ndarray), f"{path}: tensor.base is {type(base)}, not an array"
        address = value.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        offset, rest = divmod(address, value.itemsize)
        want = tensor["storageOffset"] - 1
        assert (offset, rest) == (want, 0), f"{path}: offset {offset}+{rest}B, expected {want}"
        if node["t"] == "ref":
            self._ref(node, base, path)
        else:
            assert node["t"] == "storage", f"{path}: unexpected {node['t']} node"
            self._bind(node, base, path)
            self._storage_array(node, base, path)
        self.views[node["id"]] = (*self.views.get(node["id"], ()), value)

    def _values(self, node: Node, arr: np.ndarray[Any, Any], path: str) -> None:
        got = _element_strings(arr)
        if "values" in node:
            bad = _first_diff(got, node["values"])
            assert bad is None, f"{path}: element {bad} differs ({len(got)} elements)"
            return
        assert len(got) == node["values_count"], f"{path}: {len(got)} elements"
        assert got[:8] == node["values_head"], f"{path}: values_head differs"
        assert got[-8:] == node["values_tail"], f"{path}: values_tail differs"
        digest = _fnv1a32("".join(f"{text}\n" for text in got).encode("ascii"))
        assert digest == node["values_fnv1a32"], f"{path}: values_fnv1a32 differs"

    def _function(self, node: Node, value: Any, path: str) -> None:
        assert isinstance(value, LuaFunction), f"{path}: expected LuaFunction, got {type(value)}"
        assert len(value.bytecode) == node["bytecode_len"], f"{path}: bytecode length"
        assert value.bytecode == bytes.fromhex(node["bytecode_hex"]), f"{path}: bytecode differs"
        self._bind(node, value, path)
        upvalues = value.upvalues
        assert isinstance(upvalues, LuaTable), f"{path}: upvalues are {type(upvalues)}"
        assert sorted(upvalues) == list(range(1, len(node["upvalues"]) + 1)), f"{path}: keys"
        for index, upvalue_node in enumerate(node["upvalues"], 1):
            self._upvalue(upvalue_node, upvalues[index], f"{path}.upvalues[{index}]")

    def _upvalue(self, node: Node, entry: Any, path: str) -> None:
        assert isinstance(entry, LuaTable), f"{path}: expected LuaTable, got {type(entry)}"
        assert set(entry) <= {"name", "value", "id"}, f"{path}: keys {list(entry)}"
        assert entry.get("name") == node["name"], f"{path}: name {entry.get('name')!r}"
        self.check(node["value"], entry.get("value"), f"{path}.value")
        if "id" in entry:  # equal uvid <=> equal id, across the whole file
            uvid, uid = node["uvid"], entry["id"]
            assert self.uvid_to_id.setdefault(uvid, uid) == uid, f"{path}: shared upvalue split"
            assert self.id_to_uvid.setdefault(uid, uvid) == uvid, f"{path}: upvalues merged"

    DISPATCH: ClassVar[dict[str, Callable[[Walker, Node, Any, str], None]]] = {
        **dict.fromkeys(("nil", "boolean", "number", "string"), _scalar),
        "ref": _ref, "table": _table, "object": _object, "storage": _storage,
        "tensor": _tensor, "function": _function,
    }  # fmt: skip


def check_value(case: Case, value: Any) -> None:
    oracle = case.oracle()
    assert (oracle["schema"], oracle["file"]) == ("t7oracle/1", case.file)
    assert (oracle["load_mode"], oracle["referenced"]) == (case.load_mode, case.referenced)
    walker = Walker()
    walker.check(oracle["root"], value, "root")
    _check_sharing(walker)


def _check_sharing(walker: Walker) -> None:
    """Tensors on one JSON storage share memory after loading; tensors on different ones don't."""
    groups = [[t for t in tensors if t.size] for tensors in walker.views.values()]
    firsts = [group[0] for group in groups if group]
    for group in groups:
        assert all(np.shares_memory(group[0], other) for other in group[1:]), "views don't share"
    for i, first in enumerate(firsts):
        assert not any(np.shares_memory(first, b) for b in firsts[i + 1 :]), "storages overlap"


def assert_same_bytes(got: bytes, want: bytes, what: str) -> None:
    bad = _first_diff(got, want)
    assert bad is None, f"{what}: first difference at byte {bad} ({len(got)} vs {len(want)} B)"


def packed(plain: bytes, frame_size: int = 4 << 20) -> bytes:
    """``plain`` in the seekable format, with frames of ``frame_size`` bytes."""
    chunks: list[Any] = []
    writer = SeekableZstdWriter(chunks.append, frame_size=frame_size, level=1)
    writer.write(plain)
    writer.close()
    return b"".join(bytes(chunk) for chunk in chunks)
