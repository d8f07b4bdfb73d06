"""graph/paths: one path syntax, printed and parsed, and what a path names inside a value."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamser import LuaFunction, LuaTable, TorchObject
from streamser.graph.paths import (
    MISSING,
    UPVALUES,
    Dotted,
    Entry,
    KeyOf,
    PathError,
    child,
    format_path,
    join,
    loose,
    parse_path,
)

parts = st.one_of(
    st.text(max_size=12),
    st.binary(max_size=6).filter(lambda raw: _not_utf8(raw)),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False).filter(lambda x: not x.is_integer() or abs(x) >= 2**53),
    st.booleans(),
    st.integers(1, 10**6).map(Entry),
    st.integers(1, 10**6).map(KeyOf),
    st.just(UPVALUES),
)


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def same_parts(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Equal part by part, type included (True is not 1, 1.5 is not "1.5")."""
    return len(a) == len(b) and all(
        type(x) is type(y) and (x == y or (isinstance(x, float) and math.isnan(x)))
        for x, y in zip(a, b, strict=True)
    )


@given(st.lists(parts, max_size=6).map(tuple))
def test_parse_inverts_format(keys: tuple[Any, ...]) -> None:
    printed = format_path(keys)
    assert same_parts(parse_path(printed), keys), printed


@pytest.mark.parametrize(
    ("keys", "printed"),
    [
        ((), "<root>"),
        (("model", "modules", 1, "weight"), "model.modules[1].weight"),
        ((1, "w"), "[1].w"),
        (("1",), "['1']"),
        ((1,), "[1]"),
        (("a b", "x.y", "[0]", ""), "['a b']['x.y']['[0]']['']"),
        ((True, False), "[true][false]"),
        ((2.5, -1e300), "[2.5][-1e+300]"),
        ((b"\xff",), "[b'\\xff']"),
        (("t", Entry(2), KeyOf(3)), "t[#2]{#3}"),
        (("f", UPVALUES, 1), "f.<upvalues>[1]"),
        (("it's",), '["it\'s"]'),
    ],
)
def test_printed_forms(keys: tuple[Any, ...], printed: str) -> None:
    assert format_path(keys) == printed
    assert same_parts(parse_path(printed), keys) or keys == ()


def test_the_dotted_form_and_the_root_prefix() -> None:
    assert parse_path("model.modules.3.weight") == ("model", "modules", Dotted("3"), "weight")
    assert parse_path("<root>.model[1]") == ("model", 1)
    assert parse_path("<root>") == parse_path("") == ()
    assert parse_path("a..b.") == ("a", "b")
    assert parse_path("[True][False]") == (True, False)
    assert join("", "w") == "w"
    assert join("model", "w") == "model.w"
    assert join("m", 2) == "m[2]"


@pytest.mark.parametrize("bad", ["a[1", "a['x]", "a[x y]", "a{2}", "a[nan]", "a{#x}"])
def test_malformed_paths_raise_a_path_error(bad: str) -> None:
    with pytest.raises(PathError, match="bad path"):
        parse_path(bad)
    assert issubclass(PathError, KeyError)


def test_child_tells_strings_numbers_and_booleans_apart() -> None:
    table = LuaTable([("1", "string one"), (1, "number one"), (True, "true"), (2.5, "x")])
    assert child(table, "1") == "string one"
    assert child(table, 1) == "number one"
    assert child(table, True) == "true"
    assert child(table, 2.5) == "x"
    assert child(table, Dotted("1")) == "string one"  # the dotted form prefers the string
    assert child(LuaTable({2: "two"}), Dotted("2")) == "two"  # ... else the number
    assert child(table, "missing") is MISSING
    assert child(table, False) is MISSING


def test_child_by_position_for_keys_without_literals() -> None:
    key = LuaTable({"k": "v"})
    tensor = np.arange(3)
    table = LuaTable([("a", 1), (key, "under a table"), (tensor, "under a tensor")])
    assert child(table, Entry(2)) == "under a table"
    assert child(table, KeyOf(2)) is key
    assert child(table, KeyOf(3)) is tensor
    assert child(table, Entry(4)) is MISSING
    assert child(table, Entry(0)) is MISSING


def test_child_of_objects_lists_and_functions() -> None:
    obj = TorchObject("nn.Linear", LuaTable({"weight": 1}))
    assert child(obj, "weight") == 1  # a torch object's fields follow it directly
    assert child([10, 20], 2) == 20
    assert child([10, 20], Dotted("1")) == 10
    assert child([10, 20], 0) is MISSING
    assert child([10, 20], 2.0) == 20
    function = LuaFunction(b"\x1bLJ", LuaTable({1: "up"}))
    assert child(function, UPVALUES)[1] == "up"
    assert child(function, "x") is MISSING
    assert child(3, "x") is MISSING


def test_loose_keys_are_tried_as_numbers() -> None:
    assert loose(("optim", "3", 4)) == (Dotted("optim"), Dotted("3"), 4)
