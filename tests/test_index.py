"""graph/index: the tensor index recorded by the reader's one pass, compiled and in Python.

The rows the compiled loop builds must equal the pure-Python ones field for field; every path
must name its tensor through every lookup (``f[p]``, ``get_slice``, ``in``) and be the first
path a walk of the loaded value finds; keys that are tables or tensors are indexed too.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CORPUS, real_world, values

import streamser
from streamser import LuaFunction, LuaTable, Storage, TorchObject, speedups
from streamser.graph.index import AS_KEY, IndexRecorder
from streamser.graph.walk import walk
from streamser.values.lazy import LazyArray

needs_compiled = pytest.mark.skipif(speedups.PURE, reason="STREAMSER_PURE=1 switches it off")

odd_keys = st.one_of(
    st.sampled_from(["a b", "x.y", "[0]", "1", "", "it's", "é", "<root>", "{#1}", "true"]),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=True).filter(lambda x: not x.is_integer()),
    st.booleans(),
)
leaves = st.one_of(
    st.integers(0, 9),
    st.builds(lambda n: np.arange(n, dtype=np.float32), st.integers(0, 4)),
    st.builds(lambda n: np.arange(n * 6.0).reshape(n, 6)[:, 1:3], st.integers(1, 3)),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(odd_keys, children, max_size=3),
        st.builds(lambda c: TorchObject("nn.Thing", {"child": c}), children),
    ),
    max_leaves=10,
)


def _opened(tmp_path: Path, value: Any, fmt: str = "binary", **options: Any) -> Path:
    path = tmp_path / f"value.{fmt}.t7"
    streamser.save(path, value, format=fmt, **options)
    return path


def _check_every_path(path: Path, referenced: bool = True) -> list[str]:
    """Every index path reaches its tensor through every lookup; the paths, in order."""
    with streamser.open(path, referenced=referenced) as f:
        infos = f.tensors()
        first_paths = _first_paths(f.subtree("<root>"))
        for info in infos:
            found = f[info.path]
            array = found.array if isinstance(found, Storage) else np.asarray(found)
            assert array.shape == info.shape, info.path
            assert info.path in f
            assert f.get_slice(info.path).shape == info.shape
        paths = [info.path for info in infos]
        assert [p for p in first_paths if p in set(paths)] == paths
        return paths


def _first_paths(value: Any) -> list[str]:
    """Where a walk of the loaded value first meets each tensor and storage."""
    seen: set[int] = set()
    found = []
    for path, item, _depth, _again in walk(value):
        if isinstance(item, (np.ndarray, Storage, LazyArray)) and id(item) not in seen:
            seen.add(id(item))
            found.append(path or "<root>")
    return found


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=trees, fmt=st.sampled_from(["binary", "b32", "ascii"]), compress=st.booleans())
def test_every_path_names_its_tensor(tmp_path: Path, value: Any, fmt: str, compress: bool) -> None:
    path = _opened(tmp_path, {"root": value}, fmt, compress="zstd" if compress else None)
    _check_every_path(path)


@needs_compiled
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.one_of(trees, values))
def test_compiled_rows_equal_python_rows(tmp_path: Path, value: Any) -> None:
    path = _opened(tmp_path, {"v": value, "again": value})
    with streamser.open(path) as f:
        fast = f.tensors()
        with speedups.pure_python():
            slow = f.tensors()
            with streamser.open(path) as g:  # notes taken by the Python reader
                noted = g.tensors()
    assert fast == slow
    assert [row.path for row in noted] == [row.path for row in fast]
    assert [(row.storage, row.strides) for row in noted] == [
        (row.storage, row.strides) for row in fast
    ]


def test_keys_that_are_tensors_and_tables_are_indexed(tmp_path: Path) -> None:
    weight = np.arange(6.0).reshape(2, 3)
    inner = {"deep": np.ones(2, np.int16)}
    value = LuaTable([("plain", weight), (weight[1], "a row as a key"), (LuaTable(inner), 7)])
    paths = _check_every_path(_opened(tmp_path, value))
    assert paths == ["plain", "{#2}", "{#3}.deep"]


def test_a_shared_tensor_is_listed_once_at_its_first_path(tmp_path: Path) -> None:
    shared = np.arange(4.0)
    value = {"a": {"w": shared}, "b": [shared, shared[1:]]}
    with streamser.open(_opened(tmp_path, value)) as f:
        rows = f.tensors()
    assert [row.path for row in rows] == ["a.w", "b[2]"]
    assert rows[0].storage == rows[1].storage is not None
    assert rows[1].offset == rows[0].offset + 8
    assert (rows[1].shape, rows[1].strides) == ((3,), (1,))


def test_storages_functions_and_the_root(tmp_path: Path) -> None:
    storage = Storage(np.arange(5, dtype=np.int32))
    function = LuaFunction(b"\x1bLJ\x02", LuaTable({1: np.zeros(2)}))
    value = {"s": storage, "t": np.arange(5, dtype=np.int32), "f": function}
    paths = _check_every_path(_opened(tmp_path, value))
    assert set(paths) == {"s", "t", "f.<upvalues>[1]"}
    root = _opened(tmp_path, np.arange(3.0))
    assert _check_every_path(root) == ["<root>"]


def test_the_recorder_forgets_notes_after_a_mark() -> None:
    recorder = IndexRecorder()
    node = recorder.node(-1, AS_KEY, LuaTable())
    mark = recorder.marks()
    recorder.node(node, "x", LuaTable())
    storage = Storage(np.arange(2.0))
    recorder.entry(node, "s", storage, 3)
    recorder.entry(node, "again", storage, 3)  # a storage is noted once
    assert recorder.marks() == (2, 1)
    recorder.truncate(mark)
    assert recorder.marks() == (1, 0)
    assert list(recorder.entries()) == []
    assert not recorder.storages
    recorder.entry(-1, "t", np.zeros(1), None)
    assert next(iter(recorder.entries()))[3] is None


@pytest.mark.parametrize(
    "path",
    [
        *sorted(CORPUS.glob("*.t7")),
        *real_world("torchfile"),
        *(p for p in real_world("opencv-nets") if p.suffix in (".dat", ".txt")),
    ],
    ids=lambda p: p.name,
)
def test_every_file_of_the_corpus_and_the_real_world(path: Path) -> None:
    _check_every_path(path, referenced=".noref-" not in path.name)


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
@pytest.mark.parametrize("pure", [False, True])
def test_a_value_a_repeated_key_replaced_is_not_listed(
    tmp_path: Path, fmt: str, pure: bool
) -> None:
    """A table that repeats a key keeps its last value, as Lua does; what the earlier one held
    (a tensor, a table of tensors) is no longer in the file's value, nor in its index."""
    value = LuaTable(
        [
            ("keep", np.arange(2.0)),
            ("dupAA", np.arange(3.0)),  # replaced by a number
            ("dupBB", 7),
            ("tabCC", LuaTable({"w": np.ones(4), "v": np.zeros(1)})),  # replaced by a tensor
            ("tabDD", np.full(5, 2.0)),
        ]
    )
    path = _opened(tmp_path, value, fmt)
    data = path.read_bytes().replace(b"dupBB", b"dupAA").replace(b"tabDD", b"tabCC")
    path.write_bytes(data)
    with speedups.pure_python() if pure else nullcontext():
        loaded = streamser.load(path)
        assert loaded["dupAA"] == 7
        assert loaded["tabCC"].tolist() == [2.0] * 5
        assert _check_every_path(path) == ["keep", "tabCC"]


@pytest.mark.parametrize("pure", [False, True])
def test_a_replaced_value_reached_again_later_is_listed_there(tmp_path: Path, pure: bool) -> None:
    """The object a repeated key replaced, referenced again later, is listed at that later
    place (its first place no longer holds it), with its subtree."""
    shared = np.arange(3.0)
    sub = LuaTable({"w": np.ones(2)})
    pairs = [("dupAA", shared), ("dupBB", 7), ("refCC", shared), ("tabXX", sub), ("tabYY", 1)]
    value = LuaTable([*pairs, ("refZZ", sub)])
    path = _opened(tmp_path, value)
    path.write_bytes(path.read_bytes().replace(b"dupBB", b"dupAA").replace(b"tabYY", b"tabXX"))
    with speedups.pure_python() if pure else nullcontext():
        assert _check_every_path(path) == ["refCC", "refZZ.w"]
        with streamser.open(path) as f:
            rows = f.tensors()
        assert rows[0].storage is not None  # the reader's storage index is kept


def test_many_tables_as_keys_beside_a_repeated_key_stay_linear(tmp_path: Path) -> None:
    """The rebuilt index visits each table once: thousands of tables used as keys."""
    value = LuaTable([(LuaTable({"k": i}), i) for i in range(4000)])
    value["dupAA"] = np.zeros(2)
    value["dupBB"] = np.ones(2)
    path = _opened(tmp_path, value)
    path.write_bytes(path.read_bytes().replace(b"dupBB", b"dupAA"))
    assert _check_every_path(path) == ["dupAA"]
