"""Errors: one exception family, byte offsets, limits, deep nesting and atomic saves.

Malformed input may only ever raise :class:`streamser.StreamserError` subclasses (never a bare
``struct.error``, ``IndexError``, ``RecursionError``, ``MemoryError`` or numpy warning), each
carrying the byte offset where the problem was found. Values that cannot be written raise
:class:`streamser.UnsupportedValueError` naming the path to the value, and a failed ``save``
leaves the target file exactly as it was.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import (
    CRAFTED,
    FUZZ_FILES,
    TRUNCATION_FILES,
    deadline,
    i32,
    i64,
    mutate,
    number,
    storage_record,
    string,
    torch_header,
)

import streamser
import streamser.api
import streamser.io.atomic
from streamser import (
    AmbiguousFormatError,
    FormatError,
    LimitError,
    LuaTable,
    StreamserError,
    TorchObject,
    TruncatedError,
    UnsupportedValueError,
)
from streamser.io.writeback import WriteBehindFile

CORPUS = Path(__file__).parent / "corpus"
TEMP_SUFFIX = ".streamser-tmp"
MAX_EXACT = 2**53

MUTATIONS_PER_FILE = 400


# --- helpers ---------------------------------------------------------------------------------


def corpus_bytes(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def offset_problem(err: FormatError, size: int) -> str | None:
    """Why ``err``'s offset is unacceptable for an input of ``size`` bytes, or None."""
    offset = err.offset
    if not isinstance(offset, int) or isinstance(offset, bool):
        return f"offset {offset!r} is not an int"
    if not 0 <= offset <= size:
        return f"offset {offset} is outside [0, {size}]"
    if f"(at byte {offset})" not in str(err):
        return f"message {str(err)!r} does not say '(at byte {offset})'"
    return None


def assert_offset(err: FormatError, size: int) -> None:
    problem = offset_problem(err, size)
    assert problem is None, problem


def read_outcome(data: bytes, fmt: str | None, referenced: bool = True) -> BaseException | None:
    """The exception ``deserialize`` raises on ``data`` (any kind), or None if it succeeds."""
    try:
        with deadline(10):
            streamser.deserialize(data, format=fmt, referenced=referenced)
    except Exception as exc:
        return exc
    return None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {str(exc)[:160]}"


def report(failures: list[str], limit: int = 12) -> str:
    """The failures grouped by kind (numbers masked), one example and a count per kind."""
    groups: dict[str, list[str]] = {}
    for failure in failures:
        kind = re.sub(r"\d+", "N", failure.split(": ", 1)[-1])
        groups.setdefault(kind, []).append(failure)
    lines = [f"[{len(found)}x] e.g. {found[0]}" for found in groups.values()]
    more = f"\n  ... and {len(lines) - limit} more kinds" if len(lines) > limit else ""
    return f"{len(failures)} failure(s):\n  " + "\n  ".join(lines[:limit]) + more


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


def nested_objects(depth: int) -> TorchObject:
    value = TorchObject("my.Leaf", {"leaf": True})
    for _ in range(depth):
        value = TorchObject("my.Node", {"child": value})
    return value


def list_depth(value: Any) -> int:
    """How many one-element lists (``{[1] = ...}`` tables) wrap the innermost empty one."""
    depth = 0
    while len(value):
        assert len(value) == 1
        value = value[1] if isinstance(value, LuaTable) else value[0]
        depth += 1
    return depth


def dict_depth(value: Any) -> int:
    depth = 0
    while len(value):
        value = value["k"]
        depth += 1
    return depth


def object_depth(value: Any) -> int:
    depth = 0
    while isinstance(value, TorchObject) and value.typename == "my.Node":
        value = value["child"]
        depth += 1
    assert isinstance(value, TorchObject)
    assert value.typename == "my.Leaf"
    return depth


def folder_listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --- the exception family ---------------------------------------------------------------------


def test_exception_hierarchy() -> None:
    assert issubclass(StreamserError, ValueError)
    for cls in (FormatError, TruncatedError, LimitError, AmbiguousFormatError):
        assert issubclass(cls, StreamserError)
        assert issubclass(cls, FormatError)
    assert issubclass(TruncatedError, EOFError)
    assert issubclass(UnsupportedValueError, StreamserError)
    assert issubclass(UnsupportedValueError, TypeError)
    assert not issubclass(UnsupportedValueError, FormatError)


def test_format_error_message_carries_offset() -> None:
    err = FormatError("expected a table", 17)
    assert err.offset == 17
    assert str(err) == "expected a table (at byte 17)"
    assert FormatError("no position").offset is None


# --- 1. truncation at every byte ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "mode"), TRUNCATION_FILES)
@pytest.mark.parametrize("explicit", [True, False], ids=["format", "detect"])
def test_every_prefix_fails_cleanly(name: str, mode: str, explicit: bool) -> None:
    """Every strict prefix raises a FormatError with a sane offset (or, in ascii, may be a
    shorter complete value); nothing else ever escapes."""
    data = corpus_bytes(name)
    fmt = mode if explicit else None
    failures = []
    for n in range(len(data)):
        outcome = read_outcome(data[:n], fmt)
        if outcome is None:
            if mode != "ascii":
                failures.append(f"n={n}: a strict prefix of a binary file loaded without error")
            continue
        if not isinstance(outcome, FormatError):
            failures.append(f"n={n}: {describe(outcome)}")
            continue
        problem = offset_problem(outcome, n)
        if problem is not None:
            failures.append(f"n={n}: {problem}")
    assert not failures, report(failures)


@pytest.mark.parametrize(
    ("name", "mode"), [(name, mode) for name, mode in TRUNCATION_FILES if mode != "ascii"]
)
def test_truncated_binary_is_truncated_error(name: str, mode: str) -> None:
    """A binary file cut anywhere ends inside a value: that is a TruncatedError (an EOFError),
    whichever value it was cut in, with an offset within the bytes given."""
    data = corpus_bytes(name)
    failures = []
    for n in range(len(data)):
        outcome = read_outcome(data[:n], mode)
        if not isinstance(outcome, TruncatedError) or not isinstance(outcome, EOFError):
            got = "no error" if outcome is None else describe(outcome)
            failures.append(f"n={n}: expected TruncatedError, got {got}")
            continue
        problem = offset_problem(outcome, n)
        if problem is not None:
            failures.append(f"n={n}: {problem}")
    assert not failures, report(failures)


def test_truncated_file_through_load(tmp_path: Path) -> None:
    data = corpus_bytes("nn_linear.binary.t7")
    path = tmp_path / "cut.t7"
    path.write_bytes(data[: len(data) - 5])
    for fmt in ("binary", None):
        for mmap in (True, False):
            with pytest.raises(TruncatedError) as info:
                streamser.load(path, format=fmt, mmap=mmap)
            assert_offset(info.value, len(data) - 5)


# --- 2. random corruption --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "mode"), FUZZ_FILES)
def test_corruption_raises_only_streamser_errors(name: str, mode: str) -> None:
    data = corpus_bytes(name)
    rng = random.Random(f"corrupt {name}")
    failures = []
    for trial in range(MUTATIONS_PER_FILE):
        mutated, what = mutate(rng, data, ascii=mode == "ascii")
        referenced = rng.random() < 0.8
        for fmt in (mode, None):
            outcome = read_outcome(mutated, fmt, referenced)
            where = f"#{trial} {what}, format={fmt}, referenced={referenced}"
            if outcome is None:
                continue
            if not isinstance(outcome, StreamserError):
                failures.append(f"{where}: {describe(outcome)}")
            elif isinstance(outcome, FormatError):
                problem = offset_problem(outcome, len(mutated))
                if problem is not None:
                    failures.append(f"{where}: {problem}")
    assert not failures, report(failures)


@pytest.mark.parametrize(
    "name", ["tbl_self", "tbl_cycle2", "tbl_shared", "tensor_Float_views", "nn_seq"]
)
@pytest.mark.parametrize("mode", ["binary", "ascii"])
def test_referenced_file_read_without_references(name: str, mode: str) -> None:
    """Reading back-references with referenced=False misreads them as new objects; that must
    end in a clean error (or a value), never a hang or a foreign exception."""
    outcome = read_outcome(corpus_bytes(f"{name}.{mode}.t7"), mode, referenced=False)
    assert outcome is None or isinstance(outcome, StreamserError), describe(outcome)


# --- 3. crafted inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected", "fragment"), CRAFTED)
@pytest.mark.parametrize("fmt", ["binary", None], ids=["binary", "detect"])
def test_crafted_binary_input(
    data: bytes, expected: type[StreamserError], fragment: str, fmt: str | None
) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with deadline(5), pytest.raises(StreamserError) as info:
            streamser.deserialize(data, format=fmt)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = info.value
    assert elapsed < 1.0
    assert peak < 16 << 20, f"{peak} bytes allocated to reject {len(data)} bytes"
    if isinstance(err, FormatError):
        assert_offset(err, len(data))
    if fmt == "binary":  # detection may legitimately report another reading's problem
        assert isinstance(err, expected), describe(err)
        assert fragment in str(err)


@pytest.mark.parametrize("tag", [9, 10, 0x7FFFFFFF, -1, 0x12345678])  # 0x04034B50 is a zip
def test_unknown_tag_names_the_tag(tag: int) -> None:
    data = i32(tag) + bytes(16)
    with pytest.raises(FormatError, match=f"unknown type tag {tag}") as info:
        streamser.deserialize(data, format="binary")
    assert info.value.offset == 0


def test_unknown_tag_inside_a_table_reports_its_offset() -> None:
    data = i32(3, 1, 1) + string(b"key") + i32(77)
    with pytest.raises(FormatError, match="77") as info:
        streamser.deserialize(data, format="binary")
    assert info.value.offset == len(data) - 4


def test_huge_storage_claim_fails_at_once(tmp_path: Path) -> None:
    """The headline case: 10**15 elements claimed by a file of about a hundred bytes."""
    data = storage_record(1, "torch.FloatStorage", 10**15, bytes(40))
    path = tmp_path / "huge.t7"
    path.write_bytes(data)
    for load in (
        lambda: streamser.deserialize(data, format="binary"),
        lambda: streamser.deserialize(data),
        lambda: streamser.load(path),
        lambda: streamser.load(path, format="binary", mmap=False),
    ):
        started = time.perf_counter()
        with pytest.raises(FormatError) as info:
            load()
        assert time.perf_counter() - started < 1.0
        assert_offset(info.value, len(data))


def test_empty_input_is_truncated(tmp_path: Path) -> None:
    for fmt in ("binary", "b32", "ascii", None):
        with pytest.raises(TruncatedError) as info:
            streamser.deserialize(b"", format=fmt)
        assert info.value.offset == 0
    path = tmp_path / "empty.t7"
    path.write_bytes(b"")
    with pytest.raises(TruncatedError):
        streamser.load(path)


def test_ambiguous_long_size_is_reported() -> None:
    """One reading per long size, each leaving bytes unread: the caller must choose."""
    data = torch_header(1, "torch.ByteStorage") + i64(1) + b"\x07" + bytes(11)
    with pytest.raises(AmbiguousFormatError, match="format=") as info:
        streamser.deserialize(data)
    assert_offset(info.value, len(data))
    assert streamser.deserialize(data, format="binary").array.tolist() == [7]


def _ascii_storage(typename: str, values: bytes) -> bytes:
    count = len(values.split())
    header = b"4\n1\n3\nV 1\n%d\n%s\n" % (len(typename), typename.encode())
    return header + b"%d\n%s\n" % (count, values)


ASCII_CRAFTED: list[Any] = [
    pytest.param(
        _ascii_storage("torch.FloatStorage", b"1 2").replace(b"\n2\n", b"\n1000000000000000\n"),
        TruncatedError,
        id="storage-1e15-elements",
    ),
    pytest.param(
        _ascii_storage("torch.FloatStorage", b"1 2").replace(b"\n2\n", b"\n-7\n"),
        FormatError,
        id="storage-negative-size",
    ),
    pytest.param(b"2\n-1\nabc\n", FormatError, id="string-negative-length"),
    pytest.param(b"2\n99999999999999999999\nabc\n", TruncatedError, id="string-huge"),
    pytest.param(b"3\n1\n1073741824\n0\n", FormatError, id="table-2**30"),
    pytest.param(b"3\n1\n1\n0\n1\n1\n", FormatError, id="nil-key"),
    pytest.param(b"3\n1\n1\n1\nnan\n1\n1\n", FormatError, id="nan-key"),
    pytest.param(b"1\nabc\n", FormatError, id="number-not-a-number"),
    pytest.param(b"x\n", FormatError, id="tag-not-a-number"),
    pytest.param(b"9\n", FormatError, id="tag-9"),
    pytest.param(b"99999999999999999999999\n", FormatError, id="tag-huge"),
    pytest.param(
        _ascii_storage("torch.IntStorage", b"99999999999999999999999 2"),
        FormatError,
        id="int-element-overflow",
    ),
    pytest.param(
        _ascii_storage("torch.ShortStorage", b"40000 2"), FormatError, id="short-element-overflow"
    ),
    pytest.param(b"4\n1\n3\nV 1\n17\ntorch.FloatTensor\n-1\n", FormatError, id="ndim-negative"),
]


@pytest.mark.parametrize(("data", "expected"), ASCII_CRAFTED)
def test_crafted_ascii_input(data: bytes, expected: type[FormatError]) -> None:
    started = time.perf_counter()
    with deadline(5), pytest.raises(expected) as info:
        streamser.deserialize(data, format="ascii")
    assert time.perf_counter() - started < 1.0
    assert_offset(info.value, len(data))


@pytest.mark.parametrize(
    ("typename", "token", "expected"),
    [
        ("torch.FloatStorage", b"1e300", math.inf),
        ("torch.FloatStorage", b"-1e300", -math.inf),
        ("torch.HalfStorage", b"1e10", math.inf),
        ("torch.FloatStorage", b"1e-300", 0.0),
        ("torch.DoubleStorage", b"1e999", math.inf),
    ],
)
def test_ascii_out_of_range_numbers_saturate_quietly(
    typename: str, token: bytes, expected: float
) -> None:
    """FORMAT.md: scanf reads out-of-range values as inf / 0. That is not an error, and must
    not emit a numpy RuntimeWarning either (warnings are errors under this test suite)."""
    data = _ascii_storage(typename, token + b" 2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        storage = streamser.deserialize(data, format="ascii")
    assert storage.array.tolist() == [expected, 2.0]


# --- 4. deep nesting --------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [10_000, 50_000])
@pytest.mark.parametrize("fmt", ["binary", "ascii"])
@pytest.mark.parametrize(
    ("build", "measure"),
    [(nested_list, list_depth), (nested_dict, dict_depth)],
    ids=["lists", "dicts"],
)
def test_deep_nesting_round_trips(
    depth: int,
    fmt: str,
    build: Callable[[int], Any],
    measure: Callable[[Any], int],
) -> None:
    data = streamser.serialize(build(depth), fmt)
    assert measure(streamser.deserialize(data, format=fmt)) == depth
    if depth == 10_000:
        assert measure(streamser.deserialize(data)) == depth


def test_deep_torch_objects_round_trip() -> None:
    data = streamser.serialize(nested_objects(10_000))
    assert object_depth(streamser.deserialize(data, format="binary")) == 10_000


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_deep_nesting_save_and_load(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "deep.t7"
    streamser.save(path, nested_list(10_000), fmt)
    assert list_depth(streamser.load(path)) == 10_000
    assert list_depth(streamser.load(path, format=fmt, mmap=False)) == 10_000


@pytest.mark.parametrize("fmt", ["binary", "b32", "ascii"])
def test_max_depth_is_a_limit_error(fmt: str) -> None:
    data = streamser.serialize(nested_list(1000), fmt)
    for chosen in (fmt, None):
        with pytest.raises(LimitError, match="max_depth") as info:
            streamser.deserialize(data, format=chosen, max_depth=100)
        assert isinstance(info.value, FormatError)
        assert "100" in str(info.value)
        assert_offset(info.value, len(data))


def test_max_depth_boundary() -> None:
    data = streamser.serialize(nested_list(100))  # 100 non-empty tables around an empty one
    assert list_depth(streamser.deserialize(data, max_depth=100)) == 100
    with pytest.raises(LimitError):
        streamser.deserialize(streamser.serialize(nested_list(101)), max_depth=100)


def test_max_depth_through_load(tmp_path: Path) -> None:
    path = tmp_path / "deep.t7"
    streamser.save(path, nested_list(500))
    for fmt in ("binary", None):
        with pytest.raises(LimitError, match="max_depth"):
            streamser.load(path, format=fmt, max_depth=50)


def test_default_depth_limit_on_crafted_nesting() -> None:
    """A crafted file nesting beyond the default limit stops with a LimitError, never a
    RecursionError or MemoryError."""
    depth = streamser.spec.limits.Limits.max_depth + 1
    # each level: table tag, index, 1 entry, key 1, then the next level as the value
    levels = (i32(3, index, 1) + number(1) for index in range(1, depth + 1))
    data = b"".join(levels) + i32(3, depth + 1, 0)
    with pytest.raises(LimitError, match="max_depth"):
        streamser.deserialize(data, format="binary")


# --- 5. writer errors -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_unsupported_value_names_its_path(fmt: str) -> None:
    with pytest.raises(UnsupportedValueError) as info:
        streamser.serialize({"a": {"b": [1, object()]}}, fmt)
    err = info.value
    assert isinstance(err, TypeError)
    assert re.search(r"a.*b.*2", err.path), err.path
    assert err.path in str(err)
    assert "object" in str(err)


@pytest.mark.parametrize(
    "value",
    [2**53 + 1, -(2**53) - 1, 2**63 + 1, 10**400, np.int64(2**53 + 1), np.uint64(2**64 - 1)],
    ids=["2**53+1", "-2**53-1", "2**63+1", "10**400", "np.int64", "np.uint64"],
)
def test_inexact_integer_is_refused(value: Any) -> None:
    with pytest.raises(UnsupportedValueError) as info:
        streamser.serialize({"n": value})
    message = str(info.value)
    assert str(int(value)) in message
    assert "double" in message or "exactly" in message
    assert "n" in info.value.path


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**53 - 1, 2**54, np.int64(2**53)])
def test_exact_large_integers_are_written(value: Any) -> None:
    for fmt in ("binary", "ascii"):
        back = streamser.deserialize(streamser.serialize(value, fmt), format=fmt)
        assert back == int(value)


@pytest.mark.parametrize(
    "dtype", [np.complex64, np.complex128, np.bool_, np.object_, np.str_, "datetime64[s]"]
)
def test_unsupported_array_dtype(dtype: Any) -> None:
    with pytest.raises(UnsupportedValueError) as info:
        streamser.serialize({"w": np.zeros(3, dtype=dtype)})
    assert "w" in info.value.path
    assert "dtype" in str(info.value)


@pytest.mark.parametrize(
    "value", [1j, {1, 2}, frozenset(), object(), "\ud800", type, print], ids=repr
)
def test_unsupported_scalars(value: Any) -> None:
    with pytest.raises(UnsupportedValueError):
        streamser.serialize([value])


@pytest.mark.parametrize("key", [None, math.nan], ids=["nil", "nan"])
def test_unwritable_table_key(key: Any) -> None:
    """Lua tables cannot have a nil or NaN key (the reader rejects both): writing one must be
    refused up front instead of producing a file that cannot be read back."""
    with pytest.raises(UnsupportedValueError) as info:
        streamser.serialize({"t": {key: 1}})
    assert "t" in info.value.path


def _self_cycle() -> dict[str, Any]:
    table: dict[str, Any] = {"x": 1}
    table["self"] = table
    return table


def _two_cycle() -> dict[str, Any]:
    a: dict[str, Any] = {}
    b: dict[str, Any] = {"a": a}
    a["b"] = b
    return {"root": a}


def _list_cycle() -> dict[str, Any]:
    items: list[Any] = [1]
    items.append(items)
    return {"items": items}


def _object_cycle() -> TorchObject:
    obj = TorchObject("my.Node")
    obj["me"] = obj
    return obj


CYCLES = [_self_cycle, _two_cycle, _list_cycle, _object_cycle]


@pytest.mark.parametrize("build", CYCLES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_cycle_without_references_is_refused(build: Callable[[], Any], fmt: str) -> None:
    with deadline(5), pytest.raises(UnsupportedValueError, match="cycle"):
        streamser.serialize(build(), fmt, referenced=False)


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_self_cycle_with_references_round_trips(fmt: str) -> None:
    back = streamser.deserialize(streamser.serialize(_self_cycle(), fmt), format=fmt)
    assert isinstance(back, LuaTable)
    assert back["self"] is back
    assert back["x"] == 1


def test_shared_value_without_references_is_not_a_cycle() -> None:
    shared = [1, 2]
    back = streamser.deserialize(
        streamser.serialize({"a": shared, "b": shared}, referenced=False), referenced=False
    )
    assert back["a"].to_list() == back["b"].to_list() == [1, 2]
    assert back["a"] is not back["b"]


# --- 6. atomic save ---------------------------------------------------------------------------

GOOD_VALUE = {"weight": np.arange(6, dtype=np.float32).reshape(2, 3), "name": "good"}


def _big_then_bad() -> dict[str, Any]:
    """Enough data that some of it reaches the temporary file before the failure."""
    return {"big": np.ones(1 << 20, dtype=np.float32), "bad": object()}


BAD_VALUES: list[Any] = [
    pytest.param(lambda: {"a": {"b": [1, object()]}}, False, id="object"),
    pytest.param(_big_then_bad, False, id="object-after-4MB"),
    pytest.param(lambda: [1, 2, 2**53 + 1], False, id="inexact-int"),
    pytest.param(lambda: {"w": np.zeros(3, np.complex64)}, False, id="complex-array"),
    pytest.param(_self_cycle, True, id="cycle-unreferenced"),
]


def _save_good(folder: Path) -> tuple[Path, bytes]:
    path = folder / "m.t7"
    streamser.save(path, GOOD_VALUE)
    return path, path.read_bytes()


def _assert_untouched(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before
    assert folder_listing(path.parent) == [path.name]
    assert not list(path.parent.glob(f"*{TEMP_SUFFIX}"))
    assert streamser.load(path)["name"] == "good"


@pytest.mark.parametrize(("build", "cycle"), BAD_VALUES)
@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_failed_save_keeps_old_file(
    tmp_path: Path, build: Callable[[], Any], cycle: bool, fmt: str
) -> None:
    path, before = _save_good(tmp_path)
    with deadline(10), pytest.raises(UnsupportedValueError):
        streamser.save(path, build(), fmt, referenced=not cycle)
    _assert_untouched(path, before)


def test_failed_save_to_new_path_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedValueError):
        streamser.save(tmp_path / "new.t7", _big_then_bad())
    assert folder_listing(tmp_path) == []


class _FailingMapping(Mapping[str, Any]):
    """A mapping whose iteration fails part-way, after a large value has been written."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __len__(self) -> int:
        return 2

    def __iter__(self) -> Iterator[str]:
        return iter(["big", "boom"])

    def items(self) -> Any:
        yield "big", np.ones(1 << 20, dtype=np.float64)
        raise self.error


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), KeyboardInterrupt(), RuntimeError("boom")],
    ids=["OSError", "KeyboardInterrupt", "RuntimeError"],
)
def test_error_mid_write_keeps_old_file(tmp_path: Path, error: BaseException) -> None:
    path, before = _save_good(tmp_path)
    with pytest.raises(type(error)):
        streamser.save(path, {"m": _FailingMapping(error)})
    _assert_untouched(path, before)


def test_fsync_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, before = _save_good(tmp_path)

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(streamser.io.atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        streamser.save(path, {"other": 1})
    monkeypatch.undo()
    _assert_untouched(path, before)


def test_rename_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, before = _save_good(tmp_path)

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(streamser.io.atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="cross-device"):
        streamser.save(path, {"other": 1})
    monkeypatch.undo()
    _assert_untouched(path, before)


def test_disk_full_mid_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file stops accepting bytes part-way (ENOSPC)."""
    path, before = _save_good(tmp_path)

    class FullDisk(WriteBehindFile):
        capacity = 100_000

        def write(self, data: Any) -> int:
            size = memoryview(data).nbytes
            if self.tell() + size > self.capacity:
                raise OSError(28, "No space left on device")
            return super().write(data)

    monkeypatch.setattr(streamser.io.atomic, "WriteBehindFile", FullDisk)
    with pytest.raises(OSError, match="No space"):
        streamser.save(path, {"big": np.ones(1 << 20, dtype=np.float32)})
    monkeypatch.undo()
    _assert_untouched(path, before)


def test_save_over_a_mapped_file_keeps_earlier_views(tmp_path: Path) -> None:
    """The old file is replaced, never truncated: arrays loaded from it stay valid."""
    path = tmp_path / "m.t7"
    streamser.save(path, np.arange(1000, dtype=np.float64))
    old = streamser.load(path)
    streamser.save(path, np.zeros(10, dtype=np.float64))
    assert old.tolist() == list(range(1000))
    assert streamser.load(path).tolist() == [0.0] * 10
    assert folder_listing(tmp_path) == ["m.t7"]


# --- 7. format detection ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nn_linear.binary.t7", "nn_linear.b32.t7", "nn_linear.ascii.t7"])
def test_load_detects_format(name: str) -> None:
    value = streamser.load(CORPUS / name)
    assert isinstance(value, TorchObject)
    assert value.typename == "nn.Linear"
    assert value["weight"].dtype in (np.float32, np.float64)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_file_is_a_format_error(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    path = tmp_path / "noise.t7"
    path.write_bytes(data)
    with deadline(5), pytest.raises(FormatError) as info:
        streamser.load(path)
    assert_offset(info.value, len(data))


@pytest.mark.parametrize(
    "head",
    [b"PK\x03\x04", b"\x28\xb5\x2f\xfd", b"\x80\x02\x8a\x0a", b"\x93NUMPY", b"\x89HDF\r\n"],
    ids=["zip", "zstd", "pickle", "npy", "hdf5"],
)
def test_other_file_formats_are_refused(tmp_path: Path, head: bytes) -> None:
    data = head + bytes(range(200))
    path = tmp_path / "other.bin"
    path.write_bytes(data)
    with deadline(5), pytest.raises(StreamserError) as info:
        streamser.load(path)
    if isinstance(info.value, FormatError):
        assert_offset(info.value, len(data))
