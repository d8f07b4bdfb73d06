"""values/lua: Lua tables, torch objects, storages and functions in Python."""

from __future__ import annotations

import gc
from types import MemberDescriptorType

import numpy as np
import pytest

from streamser import LuaFunction, LuaTable, Storage, TableStream, TorchObject
from streamser.errors import UnsupportedValueError
from streamser.spec.format import CLASSES
from streamser.values.lua import gc_paused, native_layout, remember_class, remembered_class


def test_lua_tables_keep_luas_rules_for_keys() -> None:
    table = LuaTable([(1, "one"), (True, "true"), ("1", "string"), (2.5, "float")])
    assert (table[1], table[True], table["1"], table[2.5]) == ("one", "true", "string", "float")
    assert table[1.0] == "one"  # Lua numbers: 1 and 1.0 are one key
    assert len(table) == 4
    table[b"1"] = "bytes"  # the same Lua string as "1": its first key object is kept
    assert list(table)[2] == "1"
    assert table["1"] == "bytes"
    with pytest.raises(ValueError, match="NaN"):
        table[float("nan")] = 1
    with pytest.raises(ValueError, match="nil"):
        table[None] = 1
    assert float("nan") not in table


def test_tables_and_arrays_as_keys_are_compared_by_identity() -> None:
    a, b = np.zeros(2), np.zeros(2)
    table = LuaTable([(a, "a"), (b, "b")])
    assert (table[a], table[b]) == ("a", "b")
    assert LuaTable() != LuaTable()


def test_list_like_tables() -> None:
    table = LuaTable.from_list(["x", "y"])
    assert table.is_list()
    assert table.to_list() == ["x", "y"]
    table["k"] = 1
    assert not table.is_list()
    with pytest.raises(ValueError, match=r"1\.\.n"):
        table.to_list()
    assert "LuaTable({1: 'x'" in repr(table)


def test_torch_objects_read_like_dicts_and_attributes() -> None:
    obj = TorchObject("nn.Linear", LuaTable({"weight": 1}), version=2)
    assert obj["weight"] == obj.weight == 1
    assert "weight" in obj
    assert list(obj) == ["weight"]
    with pytest.raises(AttributeError, match="has no field 'bias'"):
        _ = obj.bias
    odd = TorchObject("x", 5)
    assert len(odd) == 0
    assert "a" not in odd


def test_storages_and_their_classes() -> None:
    storage = Storage(np.arange(3, dtype=np.int16))
    assert storage.typename == "torch.ShortStorage"
    assert len(storage) == 3
    assert np.asarray(storage) is storage.array
    with pytest.raises(ValueError, match="one-dimensional"):
        Storage(np.zeros((2, 2)))
    cuda = Storage(np.zeros(2, np.float32), "torch.CudaStorage")
    assert remembered_class(cuda.array) is CLASSES["torch.CudaStorage"]
    plain = np.zeros(2)
    remember_class(plain, CLASSES["torch.DoubleStorage"])  # CPU classes need no memory
    assert remembered_class(plain) is None


def test_table_streams_are_written_once_with_their_declared_length() -> None:
    stream = TableStream(2, iter([("a", 1), ("b", 2)]))
    assert list(stream.consume()) == [("a", 1), ("b", 2)]
    with pytest.raises(UnsupportedValueError, match="only once"):
        list(stream.consume())
    with pytest.raises(UnsupportedValueError, match="declared 1 entries, got more"):
        list(TableStream(1, iter([("a", 1), ("b", 2)])).consume())
    with pytest.raises(ValueError, match="cannot have -1"):
        TableStream(-1, iter(()))


def test_functions_and_gc_pauses() -> None:
    function = LuaFunction(b"\x1bLJ")
    assert isinstance(function.upvalues, LuaTable)
    assert "3 bytes" in repr(LuaFunction(b"abc"))
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_native_layout_names_real_slots() -> None:
    layout = native_layout()
    for name in ("table_entries", "object_typename", "object_fields", "storage_array"):
        assert isinstance(getattr(layout, name), MemberDescriptorType)
    table = LuaTable({"k": 1})
    assert layout.table_entries.__get__(table) is table._entries
    assert layout.hash_key(True) != layout.hash_key(1)
