"""Oracle tests: every file of the Lua Torch7 reference corpus against its ``t7oracle/1`` JSON.

``tests/corpus`` (see its README) holds files written by real Torch7, each beside a JSON
description of the original object. :class:`Walker` checks a loaded value against it node by
node and matches objects one to one with JSON ids: a ``ref`` is the object of its first occurrence.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

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


def _params(cases: list[Case]) -> list[Any]:
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
    return DTYPES[typename.removeprefix("torch.").removesuffix("Tensor").removesuffix("Storage")]


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


def _check_value(case: Case, value: Any) -> None:
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


def _assert_same_bytes(got: bytes, want: bytes, what: str) -> None:
    bad = _first_diff(got, want)
    assert bad is None, f"{what}: first difference at byte {bad} ({len(got)} vs {len(want)} B)"


# --- the tests ----------------------------------------------------------------------------------


def test_manifest_lists_every_file() -> None:
    data_files = {p.name for p in CORPUS.iterdir() if p.suffix not in (".json", ".tsv", ".md")}
    assert {case.file for case in CASES} == data_files
    assert all(case.json == f"{case.file}.json" for case in CASES)
    assert all((CORPUS / case.json).is_file() for case in CASES)


@pytest.mark.parametrize("case", _params(CASES))
def test_json_match(case: Case) -> None:
    _check_value(case, case.load(case.load_mode))


@pytest.mark.parametrize("case", _params(CASES))
def test_round_trip_is_byte_exact(case: Case, tmp_path: Path) -> None:
    original = case.path.read_bytes()
    value = case.load(case.load_mode)
    written = streamser.serialize(value, case.load_mode, case.referenced)
    _assert_same_bytes(written, original, "serialize")
    if case.writer != "torch.serialize":
        target = tmp_path / case.file
        streamser.save(target, value, case.load_mode, case.referenced)
        _assert_same_bytes(target.read_bytes(), original, "save")


@pytest.mark.parametrize("case", _params(CASES))
def test_detected_format_matches_json(case: Case) -> None:
    _check_value(case, case.load(None))


def test_copy_matches_shared_corpus() -> None:
    if not SHARED_CORPUS.is_dir():
        pytest.skip(f"{SHARED_CORPUS} is absent: nothing to compare the copy with")
    shared = sorted(p.name for p in SHARED_CORPUS.iterdir())
    assert shared == sorted(p.name for p in CORPUS.iterdir())
    changed = [n for n in shared if (SHARED_CORPUS / n).read_bytes() != (CORPUS / n).read_bytes()]
    assert changed == [], f"files differ from {SHARED_CORPUS}"


NO_MMAP_FILES = {
    "tensor_Float_views.binary.t7", "tensor_and_storage.binary.t7", "nn_linear.binary.t7",
    "tensor_Float_0d_with_storage.binary.t7", "tensor_Long_views.b32.t7", "bigfloat.binary.t7",
}  # fmt: skip
NO_MMAP_CASES = [case for case in CASES if case.file in NO_MMAP_FILES]
assert len(NO_MMAP_CASES) == len(NO_MMAP_FILES), "a NO_MMAP_FILES name is not in the manifest"


@pytest.mark.parametrize("detect", [False, True], ids=["given", "detected"])
@pytest.mark.parametrize("case", _params(NO_MMAP_CASES))
def test_no_mmap_matches_json(case: Case, detect: bool) -> None:
    _check_value(case, case.load(None if detect else case.load_mode, mmap=False))
