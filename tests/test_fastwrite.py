"""The compiled writer loop (``streamser._fastwrite``) against the pure-Python writer.

The Python writer is the reference: for every value, the compiled loop must give the same bytes,
the same error (class, message, path) and the same bytes written before the error. Each test
writes with the loop as built, then again inside ``speedups.pure_python()``.
"""

from __future__ import annotations

import gc
import io
import sys
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from support import CASES, Case

import streamser
from streamser import LuaFunction, LuaTable, Storage, TableStream, TorchObject
from streamser.graph import writer as graph_writer
from streamser.graph.writer import GraphWriter
from streamser.speedups import PURE, compiled, pure_python

DTYPES = ["u1", "i1", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8", ">f4", ">i8", "?", "u2", "c8"]
FORMATS = ["binary", "b32", "ascii"]
Outcome = tuple[bytes, tuple[type[BaseException], str] | None]


def written(value: Any, fmt: str = "binary", *, referenced: bool = True, **options: Any) -> Outcome:
    """The bytes a Writer gives for ``value`` (those before the error, if one is raised)."""
    target = io.BytesIO()
    writer = streamser.Writer(target, fmt, referenced=referenced, **options)
    error = None
    try:
        writer.write_object(value)
    except Exception as exc:
        error = (type(exc), str(exc))
    writer.flush()
    return target.getvalue(), error


def assert_same(make: Callable[[], Outcome]) -> Outcome:
    fast = make()
    with pure_python():
        reference = make()
    assert fast[1] == reference[1]
    assert fast[0] == reference[0]
    return fast


def test_the_compiled_loop_is_built() -> None:
    if PURE:
        assert graph_writer._FAST is None
    else:
        assert compiled("_fastwrite") is not None
        assert graph_writer._FAST is not None


@pytest.fixture
def handovers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The values the compiled loop handed to the Python writer."""
    seen: list[Any] = []
    original = GraphWriter._write_nested

    def spy(self: GraphWriter, value: Any) -> None:
        seen.append(value)
        original(self, value)

    monkeypatch.setattr(GraphWriter, "_write_nested", spy)
    return seen


def _records(count: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(3)
    return [
        {"name": f"block{i}.proj", "w": rng.random((4, 4), np.float32), "b": np.zeros(4, "<f4")}
        for i in range(count)
    ]


@pytest.mark.parametrize("fmt", ["binary", "b32"])
@pytest.mark.parametrize("referenced", [True, False])
def test_records_are_written_without_python(
    handovers: list[Any], fmt: str, referenced: bool
) -> None:
    records = _records(50)
    assert_same(lambda: written(records, fmt, referenced=referenced))
    assert handovers == []
    loaded = streamser.deserialize(streamser.serialize(records, fmt), fmt)
    assert loaded[50]["name"] == "block49.proj"


def test_other_values_are_handed_over(handovers: list[Any]) -> None:
    base = np.arange(12.0)

    def value() -> dict[str, Any]:
        return {
            "view": base[2:],
            "strided": base[::2],
            "zero_d": np.array(1.5),
            "scalar": np.float32(2),
            "big_int": 2**60,
            "storage": Storage(np.arange(3, dtype=np.int16)),
            "big": np.zeros(1 << 14),
            "long_text": "x" * 70000,
            "big_endian": np.ones(3, ">f4"),
            "function": LuaFunction(b"\x1bLJ", LuaTable({1: "up"})),
            "table_stream": TableStream(1, iter([("k", base)])),
        }

    assert_same(lambda: written(value()))
    handed = [type(v) for v in value().values()] if graph_writer._FAST is not None else []
    assert [type(v) for v in handovers] == handed


def test_a_view_written_by_python_finds_the_storage_written_in_c() -> None:
    base = np.arange(10, dtype=np.float32)
    data, _ = assert_same(lambda: written({"base": base, "view": base[3:7], "again": base}))
    loaded = streamser.deserialize(data)
    assert loaded["again"] is loaded["base"]
    assert np.shares_memory(loaded["view"], loaded["base"])


def test_class_headers_come_from_the_python_cache() -> None:
    obj = TorchObject("nn.Linear", LuaTable({"weight": np.ones((2, 3), np.float32)}), version=2.5)
    assert_same(lambda: written([obj, obj, TorchObject("custom", obj.fields, version=0)]))
    assert_same(lambda: written([obj, obj], referenced=False))


def test_writer_values_share_one_memo() -> None:
    shared = np.arange(6, dtype=np.int32)
    table = {"t": shared}

    def run() -> Outcome:
        target = io.BytesIO()
        with streamser.Writer(target) as writer:
            writer.write_object(table)
            writer.write_int(7)
            writer.write_object([table, shared, shared[1:], {"fresh": shared}])
            writer.write_object(shared)
        return target.getvalue(), None

    assert_same(run)


@pytest.mark.parametrize(
    ("options", "value"),
    [
        ({"serial": "light"}, TorchObject("nn.Linear", LuaTable({"gradWeight": np.ones(3)}))),
        ({"cast": "float32"}, {"w": np.ones(3), "l": np.arange(3)}),
        ({"hook": lambda v: v * 2 if isinstance(v, int) else v}, {"a": [1, 2, {"b": 3}]}),
        ({"compact": True}, [np.arange(10)[2:5], np.arange(3)]),
    ],
)
def test_hooks_casts_and_modes_match(options: dict[str, Any], value: Any) -> None:
    assert_same(lambda: written(value, **options))


def _cycle() -> dict[str, Any]:
    table: dict[str, Any] = {"name": "loop"}
    table["self"] = [1, table]
    return table


def _function_cycle() -> dict[str, Any]:
    """A cycle through a value the compiled loop hands over: found across the handover."""
    table: dict[str, Any] = {"name": "f"}
    table["f"] = LuaFunction(b"\x1bLJ", LuaTable({1: table}))
    return table


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": [1, {None: 2}]}, id="nil-key"),
        pytest.param({"a": {float("nan"): 1}}, id="nan-key"),
        pytest.param(LuaTable({"deep": LuaTable({1: [2**53 + 1]})}), id="inexact-int"),
        pytest.param({"k": ["ok", "\ud800"]}, id="surrogate"),
        pytest.param({"x": {"y": object()}}, id="unsupported"),
        pytest.param([np.ones(2, np.bool_)], id="bool-dtype"),
        pytest.param([np.ones(2, np.complex64)], id="complex-dtype"),
        pytest.param(TorchObject(["not", "a", "name"]), id="bad-typename"),  # type: ignore[arg-type]
        pytest.param(_cycle(), id="cycle"),
        pytest.param(_function_cycle(), id="function-cycle"),
        pytest.param(TorchObject("nn.Cycle", LuaTable()), id="object-cycle"),
    ],
)
@pytest.mark.parametrize("referenced", [True, False])
def test_errors_match(value: Any, referenced: bool) -> None:
    if isinstance(value, TorchObject) and value.typename == "nn.Cycle":
        value.fields["me"] = value
    assert_same(lambda: written(value, referenced=referenced))


def test_cycle_error_names_the_path() -> None:
    _, error = assert_same(lambda: written(_cycle(), referenced=False))
    assert error is not None
    assert error[1].endswith("at <root>.self[2]")


def test_sink_stays_bounded() -> None:
    sizes: list[int] = []

    class Target:
        def write(self, data: Any) -> None:
            sizes.append(len(data))

    records = _records(500)
    with streamser.Writer(Target(), buffer_size=1000) as writer:
        writer.write_object(records)
    assert len(sizes) > 50
    assert max(sizes) < 1000 + 512  # the target, plus one record at most


def test_a_dict_changed_by_the_target_while_written_is_an_error() -> None:
    table: dict[Any, Any] = {i: np.ones(16) for i in range(100)}

    def run() -> Outcome:
        current = dict(table)

        class Target:
            def write(self, data: Any) -> None:
                current[len(current) + 1000] = 0

        try:
            with streamser.Writer(Target(), buffer_size=256) as writer:
                writer.write_object(current)
        except RuntimeError as exc:
            return b"", (RuntimeError, str(exc))
        return b"", None

    assert assert_same(run)[1] == (RuntimeError, "dictionary changed size during iteration")


def test_written_arrays_are_freed_while_the_writer_lives() -> None:
    arrays = [np.full(4, i, np.float32) for i in range(200)]
    refs = [weakref.ref(a) for a in arrays]
    writer = streamser.Writer(io.BytesIO())
    for array in arrays:
        writer.write_object(array)  # each its own value: no table holds it
    del arrays, array
    gc.collect()
    assert sum(ref() is not None for ref in refs) <= 1  # Python's writer keeps the last value
    assert len(writer._graph._memo) <= 1
    assert len(writer._graph._storages) <= 1


def test_values_in_collected_cycles_leave_the_memo() -> None:
    writer = streamser.Writer(io.BytesIO())
    for _ in range(20):
        table = LuaTable({"w": np.ones(3)})
        obj = TorchObject("nn.Loop", table)
        table["owner"] = obj  # a cycle only the collector frees
        writer.write_object(obj)
    del table, obj
    gc.collect()
    assert len(writer._graph._memo) <= 3  # Python's writer keeps its last value, and the rest
    writer.write_object([LuaTable({"x": np.zeros(2)}) for _ in range(3)])


def test_reference_counts_are_unchanged() -> None:
    array = np.ones((2, 2), np.float32)
    name = "a name"
    table = LuaTable({"w": array, "n": name})
    obj = TorchObject("nn.X", table)
    before = [sys.getrefcount(v) for v in (array, name, table, obj)]
    for referenced in (True, False):
        streamser.serialize([obj, {"w": array, name: [array, table]}], referenced=referenced)
    gc.collect()
    assert [sys.getrefcount(v) for v in (array, name, table, obj)] == before


def test_writing_many_records_does_not_grow_memory() -> None:
    records = _records(2000)
    streamser.serialize(records)
    gc.collect()
    tracemalloc.start()
    try:
        streamser.serialize(records)
        gc.collect()
        first = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            streamser.serialize(records)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()
    assert growth < 64 << 10


def test_save_to_a_path_matches(tmp_path: Path) -> None:
    records = _records(300)
    streamser.save(tmp_path / "fast.t7", records)
    with pure_python():
        streamser.save(tmp_path / "pure.t7", records)
    assert (tmp_path / "fast.t7").read_bytes() == (tmp_path / "pure.t7").read_bytes()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.file) for c in CASES])
def test_corpus_values_are_written_alike(case: Case) -> None:
    value = case.load(case.load_mode)
    data, error = assert_same(lambda: written(value, case.load_mode, referenced=case.referenced))
    assert error is None
    if case.writer == "torch.save":
        assert data == case.path.read_bytes()


# --- hypothesis: nested values with sharing, views, odd leaves ------------------------------


def _arrays(dtype: str) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    return hnp.arrays(
        np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    )


@st.composite
def _pool(draw: st.DrawFn) -> list[Any]:
    """Arrays that owned values and views share: owned arrays, views, a storage of one."""
    owned = [draw(_arrays(draw(st.sampled_from(DTYPES)))) for _ in range(draw(st.integers(1, 4)))]
    pool: list[Any] = list(owned)
    for array in owned:
        if array.ndim >= 1 and array.size > 1:
            pool += [array[1:], array[::-1], array.T]
        storable = array.ndim == 1 and array.dtype.str[1:] in {"u1", "i1", "i2", "i4", "i8", "f4"}
        if storable and draw(st.booleans()):
            pool.append(Storage(array))
    return pool


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([2**53, -(2**53), 2**53 + 1, 2**60, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.binary(max_size=8).map(bytearray),
    st.sampled_from([np.float32(1.5), np.int64(3), np.bool_(True), "\ud800x", float("nan")]),
)
_keys = st.one_of(
    st.text(max_size=6), st.integers(-5, 5), st.floats(allow_nan=False), st.booleans()
)


@st.composite
def graphs(draw: st.DrawFn) -> Any:
    pool = draw(_pool())
    leaves = st.one_of(_scalars, st.sampled_from(pool))

    def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        pairs = st.lists(st.tuples(st.one_of(_keys, st.sampled_from(pool)), children), max_size=4)
        return st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(_keys, children, max_size=4),
            pairs.map(LuaTable),
            st.tuples(st.sampled_from(["nn.Linear", "nn.Module"]), children).map(
                lambda t: TorchObject(t[0], LuaTable({"field": t[1]}))
            ),
        )

    value = draw(st.recursive(leaves, containers, max_leaves=16))
    return draw(st.sampled_from([value, [value, value], {"a": value, "b": [value, pool[0]]}]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=graphs(), fmt=st.sampled_from(FORMATS), referenced=st.booleans())
def test_generated_values_are_written_alike(value: Any, fmt: str, referenced: bool) -> None:
    assert_same(lambda: written(value, fmt, referenced=referenced))
    assert_same(lambda: written(value, fmt, referenced=referenced, compact=True))
