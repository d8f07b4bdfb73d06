"""graph/memo: an identity memo that is weak where Python allows it and makes no cycle."""

from __future__ import annotations

import gc
import io
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

import streamser
from streamser import LuaTable
from streamser.graph.memo import IdentityMemo, forget


@contextmanager
def no_collector() -> Iterator[None]:
    """What dies here dies by reference counting alone: no cycle is left for the collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_values_are_found_by_identity() -> None:
    memo = IdentityMemo()
    a, b = np.zeros(2), np.zeros(2)
    memo.put(a, 1)
    assert memo.get(a) == 1
    assert memo.get(b) is None
    assert len(memo) == 1


def test_dead_objects_leave_the_memo() -> None:
    memo = IdentityMemo()
    with no_collector():
        array, table = np.zeros(3), LuaTable()
        memo.put(array, 1)
        memo.put(table, 2)
        assert len(memo) == 2
        del array, table
        assert len(memo) == 0


def test_objects_python_cannot_reference_weakly_are_kept_alive() -> None:
    memo = IdentityMemo()
    plain = {"k": 1}
    memo.put(plain, 7)
    key = id(plain)
    del plain
    assert memo.entries[key][0] == {"k": 1}  # held: its id cannot be reused meanwhile
    assert memo.get(memo.entries[key][0]) == 7


def test_a_memo_and_its_entries_make_no_cycle() -> None:
    with no_collector():
        memo = IdentityMemo()
        kept = [np.zeros(1) for _ in range(3)]
        for index, array in enumerate(kept):
            memo.put(array, index)
        alive = weakref.ref(memo)
        del memo
        assert alive() is None
        del kept  # their callbacks find the memo gone
    forget(alive, 123)  # nothing to do, no error


def test_a_writer_makes_no_cycle_either() -> None:
    """Its dispatch table holds plain functions, not bound methods (which would hold it)."""
    value = {"w": np.ones(3), "t": LuaTable({1: "x"}), "sub": np.ones(4)[1:]}
    for fmt in ("binary", "ascii"):
        with no_collector():
            writer = streamser.Writer(io.BytesIO(), fmt)
            writer.write_object(value)
            writer.write_object([value, {"again": value["w"]}])
            alive = weakref.ref(writer._graph)
            del writer
            assert alive() is None, fmt


def test_a_reader_makes_no_cycle() -> None:
    data = streamser.serialize({"a": [np.ones(2)], "b": "text"})
    with no_collector():
        reader = streamser.Reader(data)
        reader.read_object()
        alive = weakref.ref(reader._graph)
        del reader
        assert alive() is None
