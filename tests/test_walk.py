"""graph/walk: paths, sharing and the outline of a value in memory."""

from __future__ import annotations

import numpy as np

from streamser import LuaFunction, LuaTable, Storage, TorchObject
from streamser.graph.walk import outline, summary, tensors, walk


def _value() -> LuaTable:
    weight = np.arange(6.0).reshape(2, 3)
    key = LuaTable({"in_key": np.ones(2)})
    model = TorchObject("nn.Linear", LuaTable({"weight": weight, "bias": np.zeros(2)}))
    value = LuaTable([("model", model), ("a b", [weight, weight[1]]), (key, "tagged")])
    value["self"] = value  # a cycle
    value["fn"] = LuaFunction(b"\x1bLJ", LuaTable({1: np.ones(1)}))
    value[True] = Storage(np.arange(3, dtype=np.int32))
    return value


def test_paths_follow_the_one_syntax() -> None:
    paths = [path for path, _item, _depth, _again in walk(_value())]
    assert paths == [
        "", "model", "model.weight", "model.bias", "['a b']", "['a b'][1]", "['a b'][2]",
        "{#3}", "{#3}.in_key", "[#3]", "self", "fn", "fn.<upvalues>", "fn.<upvalues>[1]",
        "[true]",
    ]  # fmt: skip


def test_shared_values_are_reported_once_as_seen() -> None:
    again = {path for path, _item, _depth, seen in walk(_value()) if seen}
    assert again == {"self", "['a b'][1]"}  # the model's weight again, and the table itself
    first = dict(tensors(_value()))
    assert list(first) == ["model.weight", "model.bias", "['a b'][2]", "{#3}.in_key",
                           "fn.<upvalues>[1]"]  # fmt: skip
    assert np.shares_memory(first["model.weight"], first["['a b'][2]"])
    assert list(dict(tensors(np.ones(2)))) == ["<root>"]


def test_depth_needs_no_recursion() -> None:
    deep: list[object] = []
    for _ in range(20_000):
        deep = [deep]
    assert max(depth for _path, _item, depth, _again in walk(deep)) == 20_000


def test_outline_and_summaries() -> None:
    lines = outline(_value()).splitlines()
    assert lines[0] == "<root>: table of 6"
    assert "  model: nn.Linear (version 1)" in lines
    assert "    weight: float64 [2, 3] (48 bytes)" in lines
    assert "  self: table of 6  (shared, shown above)" in lines
    assert "  [true]: torch.IntStorage of 3" in lines
    assert outline(_value(), max_lines=3).splitlines()[-1] == "..."
    assert summary(LuaFunction(b"abc")) == "function (3 bytes of bytecode)"
    assert summary("x" * 100).endswith("...")
