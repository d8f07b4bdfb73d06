"""Oracle tests: every file of the Lua Torch7 reference corpus against its ``t7oracle/1`` JSON.

The corpus (``tests/corpus``, see its README) holds files written by real Torch7 and, beside each,
a JSON description of the original object. A :class:`Walker` walks the loaded Python value against
that description: every node is checked, and objects with identity are matched one to one with
the JSON ids (a ``ref`` must be the very object of its first occurrence).
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser import LuaFunction, LuaTable, Storage, TorchObject

CORPUS = Path(__file__).resolve().parent / "corpus"
SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
DTYPES = {
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

    @property
    def serialized(self) -> bool:
        return self.writer == "torch.serialize"

    def oracle(self) -> Node:
        return json.loads((CORPUS / self.json).read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    def load(self, format: str | None, *, mmap: bool = True) -> Any:
        if self.serialized:
            return streamser.deserialize(self.path.read_bytes(), format, self.referenced)
        return streamser.load(self.path, format, self.referenced, mmap=mmap)


def _manifest() -> list[Case]:
    with open(CORPUS / "MANIFEST.tsv", newline="", encoding="utf-8") as fileobj:
        rows = list(csv.DictReader(fileobj, delimiter="\t"))
    assert all(row["referenced"] in ("true", "false") for row in rows)
    return [Case(**{**row, "referenced": row["referenced"] == "true"}) for row in rows]


CASES = _manifest()
CASE_PARAMS = [pytest.param(case, id=case.file) for case in CASES]


# --- expected element strings (README: STR) -----------------------------------------------------


def _element_strings(arr: np.ndarray[Any, Any]) -> list[str]:
    """The elements of a view in logical row-major order, printed as the oracle prints them."""
    flat = arr.ravel(order="C")
    if flat.dtype.kind in "iu":
        return [str(v) for v in flat.tolist()]
    return ["nan" if v != v else "%.17g" % v for v in flat.astype(np.float64).tolist()]


@functools.cache
def _fnv1a32(data: bytes) -> int:
    digest = 0x811C9DC5
    for byte in data:
        digest = ((digest ^ byte) * 16777619) & 0xFFFFFFFF
    return digest


def _first_diff(got: Any, want: Any) -> int | None:
    """Index of the first difference of two sequences (the shorter length if one is a prefix)."""
    index = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if index is None and len(got) != len(want):
        return min(len(got), len(want))
    return index


def _address(arr: np.ndarray[Any, Any]) -> int:
    return int(arr.__array_interface__["data"][0])


def _kind(typename: str) -> str:
    """``torch.FloatTensor`` / ``torch.FloatStorage`` -> ``Float``."""
    return typename.removeprefix("torch.").removesuffix("Tensor").removesuffix("Storage")


def _flat(obj: Any) -> Any:
    """The identity of a storage: a stand-alone Storage's array, or a tensor's base array."""
    return obj.array if isinstance(obj, Storage) else obj


def _scalar_key(node: Node) -> tuple[str, Any] | None:
    """Lookup key of a JSON key node that is a plain Lua value, None for reference types."""
    kind = node["t"]
    if kind == "number":
        return ("n", float(node["v"]))
    if kind == "string":
        return ("s", bytes.fromhex(node["hex"]))
    return ("b", node["v"]) if kind == "boolean" else None


def _python_key(key: Any) -> tuple[str, Any] | None:
    """The same lookup key for a loaded key, None for reference types."""
    if isinstance(key, bool):
        return ("b", key)
    if isinstance(key, (int, float)):
        return ("n", float(key))
    if isinstance(key, str):
        return ("s", key.encode("utf-8"))
    return ("s", key) if isinstance(key, bytes) else None


def _label(node: Node, index: int) -> str:
    if node["t"] == "string" and "text" in node:
        return repr(node["text"])
    return node["v"] if node["t"] == "number" else f"#{index}"


# --- the walker ---------------------------------------------------------------------------------


class Walker:
    """Checks a loaded value against a JSON node; JSON ids are matched one to one with objects."""

    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}  # JSON id -> object (a storage's array under a tensor)
        self.owner: dict[int, int] = {}  # id(object) -> JSON id, so that distinct ids stay distinct
        self.uvid_to_id: dict[Any, Any] = {}
        self.id_to_uvid: dict[Any, Any] = {}
        self.views: dict[int, tuple[np.ndarray[Any, Any], ...]] = {}  # storage id -> tensors

    def check(self, node: Node, value: Any, path: str) -> None:
        self.DISPATCH[node["t"]](self, node, value, path)

    def _state(self) -> tuple[dict[Any, Any], ...]:
        return self.memo, self.owner, self.uvid_to_id, self.id_to_uvid, self.views

    def _bind(self, node: Node, obj: Any, path: str) -> None:
        assert node["id"] not in self.memo, f"{path}: JSON id {node['id']} defined twice"
        other = self.owner.get(id(_flat(obj)))
        assert other is None, f"{path}: same object as JSON id {other}, expected a distinct one"
        self.memo[node["id"]] = obj
        self.owner[id(_flat(obj))] = node["id"]

    def _nil(self, node: Node, value: Any, path: str) -> None:
        assert value is None, f"{path}: expected nil, got {value!r}"

    def _boolean(self, node: Node, value: Any, path: str) -> None:
        assert type(value) is bool and value is node["v"], f"{path}: expected {node['v']}"

    def _number(self, node: Node, value: Any, path: str) -> None:
        want = float(node["v"])
        if math.isnan(want):
            assert type(value) is float and math.isnan(value), f"{path}: expected nan, {value!r}"
        elif want.is_integer() and abs(want) <= 2**53 and str(want) != "-0.0":
            assert type(value) is int and value == int(want), f"{path}: expected int {node['v']}"
        else:
            assert type(value) is float, f"{path}: expected float {node['v']}, got {value!r}"
            same_sign = math.copysign(1, value) == math.copysign(1, want)
            assert value == want and same_sign, f"{path}: expected {node['v']}, got {value!r}"

    def _string(self, node: Node, value: Any, path: str) -> None:
        raw = bytes.fromhex(node["hex"])
        assert len(raw) == node["len"], f"{path}: oracle hex and len disagree"
        try:
            want: str | bytes = raw.decode("utf-8")
        except UnicodeDecodeError:
            want = raw
        assert type(value) is type(want), f"{path}: expected {type(want).__name__}"
        assert value == want, f"{path}: expected {want[:60]!r}, got {value[:60]!r}"

    def _ref(self, node: Node, value: Any, path: str) -> None:
        assert node["id"] in self.memo, f"{path}: ref to JSON id {node['id']} before its definition"
        want = self.memo[node["id"]]
        if not (isinstance(value, Storage) and isinstance(want, Storage)):
            value, want = _flat(value), _flat(want)  # a storage seen both alone and under a tensor
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
        assert len(table) == len(entries), f"{path}: {len(table)} entries, expected {len(entries)}"
        scalars: dict[tuple[str, Any], tuple[Any, Any]] = {}
        others: list[tuple[Any, Any]] = []
        for key, value in table.items():
            lookup = _python_key(key)
            if lookup is None:
                others.append((key, value))
            else:
                scalars[lookup] = (key, value)
        for index, (key_node, value_node) in enumerate(entries):
            key_path = f"{path}.keys[{index}]"
            lookup = _scalar_key(key_node)
            if lookup is not None:
                assert lookup in scalars, f"{key_path}: key {_label(key_node, index)} missing"
                key, value = scalars.pop(lookup)
                self.check(key_node, key, key_path)
            else:
                key, value = others.pop(self._match_key(key_node, others, key_path))
            self.check(value_node, value, f"{path}[{_label(key_node, index)}]")

    def _match_key(self, node: Node, candidates: list[tuple[Any, Any]], path: str) -> int:
        """Index of the candidate key that matches ``node`` (checked and bound on return)."""
        for index, (key, _value) in enumerate(candidates):
            saved = tuple(dict(part) for part in self._state())
            try:
                self.check(node, key, path)
            except AssertionError:
                for part, copy in zip(self._state(), saved, strict=True):
                    part.clear()
                    part.update(copy)
                continue
            return index
        raise AssertionError(f"{path}: no table key matches {node['t']} node")

    def _storage(self, node: Node, value: Any, path: str) -> None:
        assert isinstance(value, Storage), f"{path}: expected Storage, got {type(value)}"
        assert value.typename == node["typename"], f"{path}: typename {value.typename!r}"
        assert len(value) == node["size"], f"{path}: size {len(value)}, expected {node['size']}"
        self._bind(node, value, path)
        self._storage_array(node, value.array, path)

    def _storage_array(self, node: Node, array: Any, path: str) -> None:
        assert isinstance(array, np.ndarray) and array.ndim == 1, f"{path}: not a flat array"
        assert array.dtype == DTYPES[_kind(node["typename"])], f"{path}: dtype {array.dtype}"
        assert array.shape == (node["size"],), f"{path}: shape {array.shape}"
        self._values(node, array, path)

    def _tensor(self, node: Node, value: Any, path: str) -> None:
        assert type(value) is np.ndarray, f"{path}: expected ndarray, got {type(value)}"
        assert value.dtype == DTYPES[_kind(node["typename"])], f"{path}: dtype {value.dtype}"
        item = value.itemsize
        shape, strides = tuple(node["size"]), tuple(s * item for s in node["stride"])
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
        offset, rest = divmod(_address(value) - _address(base), value.itemsize)
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
        if "id" in entry:
            uvid, uid = node["uvid"], entry["id"]
            assert self.uvid_to_id.setdefault(uvid, uid) == uid, f"{path}: shared upvalue split"
            assert self.id_to_uvid.setdefault(uid, uvid) == uvid, f"{path}: upvalues merged"

    DISPATCH: dict[str, Callable[[Walker, Node, Any, str], None]] = {
        "nil": _nil, "boolean": _boolean, "number": _number, "string": _string,
        "ref": _ref, "table": _table, "object": _object, "storage": _storage,
        "tensor": _tensor, "function": _function,
    }  # fmt: skip


def _check_value(case: Case, value: Any) -> Walker:
    oracle = case.oracle()
    assert (oracle["schema"], oracle["file"]) == ("t7oracle/1", case.file)
    assert (oracle["load_mode"], oracle["referenced"]) == (case.load_mode, case.referenced)
    walker = Walker()
    walker.check(oracle["root"], value, "root")
    return walker


def _assert_same_bytes(got: bytes, want: bytes, what: str) -> None:
    bad = _first_diff(got, want)
    assert bad is None, f"{what}: first difference at byte {bad} ({len(got)} vs {len(want)} B)"


# --- the tests ----------------------------------------------------------------------------------


def test_manifest_lists_every_file() -> None:
    data_files = {p.name for p in CORPUS.iterdir() if p.suffix not in (".json", ".tsv", ".md")}
    assert {case.file for case in CASES} == data_files
    assert all((CORPUS / case.json).is_file() and case.json == f"{case.file}.json" for case in CASES)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_json_match(case: Case) -> None:
    _check_value(case, case.load(case.load_mode))


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_round_trip_is_byte_exact(case: Case, tmp_path: Path) -> None:
    original = case.path.read_bytes()
    value = case.load(case.load_mode)
    written = streamser.serialize(value, case.load_mode, case.referenced)
    _assert_same_bytes(written, original, "serialize")
    if not case.serialized:
        target = tmp_path / case.file
        streamser.save(target, value, case.load_mode, case.referenced)
        _assert_same_bytes(target.read_bytes(), original, "save")


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_detected_format_matches_json(case: Case) -> None:
    _check_value(case, case.load(None))


def test_copy_matches_shared_corpus() -> None:
    if not SHARED_CORPUS.is_dir():
        pytest.skip(f"{SHARED_CORPUS} is absent: nothing to compare the copy with")
    shared = sorted(p.name for p in SHARED_CORPUS.iterdir())
    assert shared == sorted(p.name for p in CORPUS.iterdir())
    changed = [n for n in shared if (SHARED_CORPUS / n).read_bytes() != (CORPUS / n).read_bytes()]
    assert changed == [], f"files differ from {SHARED_CORPUS}"


NO_MMAP_FILES = [
    "tensor_Float_views.binary.t7",
    "tensor_and_storage.binary.t7",
    "tensor_Float_0d_with_storage.binary.t7",
    "tensor_Long_views.b32.t7",
    "nn_linear.binary.t7",
    "bigfloat.binary.t7",
]
NO_MMAP_CASES = [case for case in CASES if case.file in NO_MMAP_FILES]
assert len(NO_MMAP_CASES) == len(NO_MMAP_FILES), "a NO_MMAP_FILES name is not in the manifest"


@pytest.mark.parametrize("detect", [False, True], ids=["given", "detected"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.file) for c in NO_MMAP_CASES])
def test_no_mmap_matches_json(case: Case, detect: bool) -> None:
    _check_value(case, case.load(None if detect else case.load_mode, mmap=False))


def _tensors_with_storage(node: Any) -> int:
    if isinstance(node, dict):
        found = int(node.get("t") == "tensor" and node["storage"]["t"] != "nil")
        return found + sum(_tensors_with_storage(v) for v in node.values())
    return sum(_tensors_with_storage(v) for v in node) if isinstance(node, list) else 0


SHARING_CASES = [case for case in CASES if _tensors_with_storage(case.oracle()["root"]) >= 2]
assert SHARING_CASES, "the corpus has no file with two tensors"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.file) for c in SHARING_CASES])
def test_views_of_one_storage_share_memory(case: Case) -> None:
    """Tensors on one JSON storage share memory after loading; tensors on different ones don't."""
    walker = _check_value(case, case.load(case.load_mode))
    groups = [[t for t in tensors if t.size] for tensors in walker.views.values()]
    groups = [group for group in groups if group]
    for group in groups:
        assert all(np.shares_memory(group[0], other) for other in group[1:])
    firsts = [group[0].base for group in groups]
    for i, first in enumerate(firsts):
        assert not any(np.may_share_memory(first, other) for other in firsts[i + 1 :])
