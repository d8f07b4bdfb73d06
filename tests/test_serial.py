"""Serialization modes, hooks and casts, checked against Torch7's and dpnn's own files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamser
from streamser import LuaTable, Storage, TorchObject
from streamser.graph.walk import walk
from streamser.tools.serial import MODES, add_serial_fields, fields_to_empty, is_module

CORPUS = Path(__file__).parent / "corpus"


def _emptied(value: Any) -> bool:
    """An empty tensor (Torch's ``:set()``: no dimensions, no storage) or an empty table."""
    if isinstance(value, np.ndarray):
        return value.size == 0 and value.base is None
    return isinstance(value, LuaTable) and len(value) == 0


def _modules(value: Any) -> list[TorchObject]:
    return [module for module in value.modules.to_list()]


def _stripped(mode: str, name: str = "nn_seq.binary.t7", fmt: str = "binary") -> Any:
    original = streamser.load(CORPUS / name)
    return original, streamser.deserialize(streamser.serialize(original, fmt, serial=mode), fmt)


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, Storage):
        return isinstance(b, Storage) and a.array.tobytes() == b.array.tobytes()
    return bool(a == b) if not isinstance(a, (LuaTable, TorchObject)) else True


def test_medium_matches_torch_clear_state() -> None:
    cleared = _modules(streamser.load(CORPUS / "nn_seq_cleared.binary.t7"))
    original, medium = _stripped("medium")
    for before, after, torch_cleared in zip(
        _modules(original), _modules(medium), cleared, strict=True
    ):
        assert set(after) == set(before)
        expected = {key for key in torch_cleared if _emptied(torch_cleared[key])}
        expected -= {key for key in before if _emptied(before[key])}  # already empty before
        got = {key for key in after if _emptied(after[key]) and not _emptied(before[key])}
        assert got == expected, before.typename
        for key in set(before) - got:
            assert _same_value(before[key], after[key]), (before.typename, key)


@pytest.mark.parametrize("mode", ["medium", "light"])
def test_modes_cover_what_dpnn_empties(mode: str) -> None:
    dpnn = _modules(streamser.load(CORPUS / f"nn_serial_{mode}.binary.t7").modules[1])
    _original, ours = _stripped(mode, "nn_serial_heavy.binary.t7")
    for theirs, mine in zip(dpnn, _modules(ours.modules[1]), strict=True):
        listed = set(theirs["dpnn_serialEmpty"].values())  # what dpnn says it emptied
        present = {key for key in listed if key in mine}
        assert present, theirs.typename
        assert all(_emptied(mine[key]) for key in present), (theirs.typename, present)
        for key in ("weight", "bias"):
            if key in theirs:
                assert _same_value(theirs[key], mine[key])


def test_light_also_drops_gradients_and_keeps_parameters() -> None:
    original, light = _stripped("light")
    for before, after in zip(_modules(original), _modules(light), strict=True):
        for key in ("gradWeight", "gradBias", "output", "gradInput"):
            if key in before:
                assert _emptied(after[key]), (before.typename, key)
        for key in ("weight", "bias", "kW", "padW", "_type", "size"):
            if key in before:
                assert _same_value(before[key], after[key]), (before.typename, key)


def test_modes_never_change_the_callers_objects() -> None:
    original = streamser.load(CORPUS / "nn_seq.binary.t7")
    outputs = [module["output"] for module in _modules(original)]
    streamser.serialize(original, serial="light")
    assert [module["output"] for module in _modules(original)] == outputs
    assert all(not _emptied(output) for output in outputs)


def test_sharing_survives_and_shared_buffers_are_written_once() -> None:
    weight, buffer = np.ones((3, 2)), np.zeros(4)
    first = TorchObject("nn.Linear", LuaTable({"weight": weight, "gradInput": buffer}))
    second = TorchObject("nn.Linear", LuaTable({"weight": weight, "gradInput": buffer}))
    data = streamser.serialize([first, second], serial="medium")
    a, b = streamser.deserialize(data).to_list()
    assert a.weight is b.weight
    assert a.gradInput is b.gradInput
    assert _emptied(a.gradInput)
    assert data.count(b"torch.DoubleTensor") == 2  # one weight, one emptied buffer


def test_field_lists_are_extensible() -> None:
    custom = TorchObject("nn.MyCache", LuaTable({"cache": np.ones(5), "weight": np.ones(2)}))
    assert not _emptied(streamser.deserialize(streamser.serialize(custom, serial="medium")).cache)
    add_serial_fields("medium", "nn.MyCache", "cache")
    assert _emptied(streamser.deserialize(streamser.serialize(custom, serial="medium")).cache)
    declared = TorchObject(
        "nn.Declares",
        LuaTable({"memory": np.ones(3), "dpnn_mediumEmpty": LuaTable.from_list(["memory"])}),
    )
    assert _emptied(streamser.deserialize(streamser.serialize(declared, serial="medium")).memory)


def test_emptied_cuda_tensors_keep_their_class() -> None:
    storage = Storage(np.ones(4, np.float32), "torch.CudaStorage")
    module = TorchObject("cudnn.ReLU", LuaTable({"output": storage.array[:2]}))
    data = streamser.serialize(module, serial="medium")
    assert b"torch.CudaTensor" in data
    assert b"torch.CudaStorage" not in data


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="heavy"):
        streamser.serialize([], serial="feather")


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_modes_shrink_files(fmt: str) -> None:
    original = streamser.load(CORPUS / f"nn_seq.{fmt}.t7")
    sizes = [
        len(streamser.serialize(original, fmt, serial=mode))
        for mode in streamser.tools.serial.MODES
    ]
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[0] == (CORPUS / f"nn_seq.{fmt}.t7").stat().st_size


# --- hooks ---------------------------------------------------------------------------------------


def test_hook_replaces_values_and_keeps_sharing_on_the_original() -> None:
    shared = np.arange(4.0)
    calls: list[Any] = []

    def double(value: Any) -> Any:
        calls.append(value)
        return value * 2 if isinstance(value, np.ndarray) else value

    loaded = streamser.deserialize(streamser.serialize([shared, shared, 5], hook=double))
    first, second, number = loaded.to_list()
    assert first.tolist() == [0, 2, 4, 6]
    assert first is second  # keyed on the original: written once
    assert number == 5
    assert shared.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("bad_key", [None, float("nan")])
def test_a_hook_cannot_make_a_nil_table_key(tmp_path: Path, bad_key: Any) -> None:
    target = tmp_path / "x.t7"
    target.write_bytes(b"old")
    with pytest.raises(streamser.UnsupportedValueError, match="hook made a table key"):
        streamser.save(target, {"a": 1}, hook=lambda v: bad_key if isinstance(v, str) else v)
    assert target.read_bytes() == b"old"


# --- casts ---------------------------------------------------------------------------------------


def test_cast_float32_converts_every_floating_tensor() -> None:
    original = streamser.load(CORPUS / "nn_seq.binary.t7")
    data = streamser.serialize(original, cast="float32")
    assert b"torch.DoubleTensor" not in data
    cast = streamser.deserialize(data)
    for before, after in zip(_modules(original), _modules(cast), strict=True):
        if "weight" in before:
            assert after.weight.dtype == np.float32
            np.testing.assert_array_equal(after.weight, before.weight.astype(np.float32))


def test_cast_cpu_and_mappings() -> None:
    storage = Storage(np.arange(4, dtype=np.float64), "torch.CudaDoubleStorage")
    value = {"t": storage.array[1:], "s": storage}
    data = streamser.serialize(value, cast="cpu")
    assert b"Cuda" not in data
    assert streamser.deserialize(data)["s"].typename == "torch.DoubleStorage"
    both = streamser.serialize(value, cast="cpu+float32")
    assert b"torch.FloatTensor" in both
    assert b"torch.FloatStorage" in both
    mapped = streamser.serialize(value, cast={"torch.CudaDoubleTensor": "torch.HalfTensor"})
    loaded = streamser.deserialize(mapped)
    assert loaded["t"].dtype == np.float16
    assert np.shares_memory(loaded["t"], loaded["s"].array)  # still one storage


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_cast_to_half_writes_torch_nan(fmt: str) -> None:
    data = streamser.serialize(np.array([1.5, np.nan, -np.nan]), fmt, cast="float16")
    loaded = streamser.deserialize(data, fmt)
    assert loaded.dtype == np.float16
    assert loaded.view(np.uint16).tolist()[1:] == [0x7FFF, 0x7FFF]


def test_cast_converts_big_arrays_in_chunks(tmp_path: Path) -> None:
    big = np.linspace(0, 1, 5_000_000)  # 40 MB of doubles, converted 16 MB at a time
    streamser.save(tmp_path / "c.t7", {"w": big[::2]}, cast="float32")
    loaded = streamser.load(tmp_path / "c.t7")["w"]
    np.testing.assert_array_equal(loaded, big[::2].astype(np.float32))


def test_unknown_casts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown cast"):
        streamser.serialize([], cast="int8")
    with pytest.raises(ValueError, match="unknown tensor"):
        streamser.serialize([], cast={"torch.Foo": "torch.FloatTensor"})


# --- OpenCV, the remaining consumer of .t7 models on PyPI ----------------------------------------

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is in the test extras")


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_opencv_runs_light_and_medium_models_identically(tmp_path: Path, fmt: str) -> None:
    model = streamser.load(CORPUS / f"nn_seq.{fmt}.t7")
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    outputs = []
    for mode in streamser.tools.serial.MODES:
        path = tmp_path / f"{mode}.t7"
        streamser.save(path, model, fmt, serial=mode)
        net = cv2.dnn.readNetFromTorch(str(path), isBinary=fmt == "binary")
        net.setInput(image)
        outputs.append(net.forward())
    assert outputs[0].shape == (1, 10)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


NN_FILES = sorted(p.name for p in CORPUS.glob("nn_*.t7"))


def _all_modules(value: Any) -> list[TorchObject]:
    return [item for _, item, _, again in walk(value) if is_module(item) and not again]


@pytest.mark.parametrize("name", NN_FILES)
@pytest.mark.parametrize("mode", ["medium", "light"])
def test_every_corpus_model_keeps_parameters_and_drops_buffers(name: str, mode: str) -> None:
    fmt = "ascii" if ".ascii." in name else "b32" if ".b32." in name else "binary"
    original = streamser.load(CORPUS / name, format=fmt)
    stripped = streamser.deserialize(streamser.serialize(original, fmt, serial=mode), fmt)
    before, after = _all_modules(original), _all_modules(stripped)
    assert len(before) == len(after) > 0
    for old, new in zip(before, after, strict=True):
        emptied = fields_to_empty(mode, old)
        for key in old:
            if key in emptied and isinstance(old[key], (np.ndarray, LuaTable)):
                assert _emptied(new[key]), (name, old.typename, key)
            elif key in emptied:
                assert key not in new, (name, old.typename, key)  # nn.utils.clear sets it to nil
            else:
                assert _same_value(old[key], new[key]), (name, old.typename, key)
        for key in ("weight", "bias", "running_mean", "running_var"):
            assert (key in old) == (key in new)


# --- clearing by identity, as Torch's t:set() ----------------------------------------------------

REAL_WORLD = Path(__file__).parent / "real-world" / "torchfile"
EMPTIED = {"medium": {"output", "gradInput", "addBuffer"}}
EMPTIED["light"] = EMPTIED["medium"] | {"gradWeight", "gradBias"}


def _items(value: Any) -> Any:
    if isinstance(value, TorchObject):
        return value.fields.items(), value.fields
    if isinstance(value, (list, tuple)):
        return enumerate(value, 1), None
    return value.items(), None


def _parallel(original: Any, loaded: Any) -> list[tuple[str, Any, Any]]:
    """(path, original, loaded) for every reference to a tensor, walking both graphs at once;
    keys that the loaded graph lacks are skipped (what a mode removes is checked apart)."""
    pairs: list[tuple[str, Any, Any]] = []
    stack = [("<root>", original, loaded)]
    seen: set[int] = set()
    while stack:
        path, old, new = stack.pop()
        if isinstance(old, np.ndarray):
            pairs.append((path, old, new))
            continue
        if not isinstance(old, (TorchObject, LuaTable, dict, list, tuple)) or id(old) in seen:
            continue
        seen.add(id(old))
        items, _ = _items(old)
        target = new.fields if isinstance(new, TorchObject) else new
        for key, value in items:
            if isinstance(target, LuaTable) and key in target:
                stack.append((f"{path}.{key}", value, target[key]))
    return pairs


def _check_in_place(original: Any, loaded: Any, emptied: set[int]) -> None:
    """Every reference to an emptied tensor is one empty tensor of its type; the rest is
    bit-identical with its sharing kept."""
    written: dict[int, Any] = {}
    for path, old, new in _parallel(original, loaded):
        assert written.setdefault(id(old), new) is new, f"{path}: two objects for one tensor"
        assert new.dtype == old.dtype, path
        if id(old) in emptied:
            assert (new.size, new.ndim, new.base) == (0, 1, None), path
        else:
            assert (new.shape, new.tobytes()) == (old.shape, old.tobytes()), path
    kept = [(old, written[id(old)]) for _, old, _ in _parallel(original, loaded)]
    kept = [(old, new) for old, new in kept if id(old) not in emptied and old.size]
    for old_a, new_a in kept:
        for old_b, new_b in kept:
            assert np.shares_memory(old_a, old_b) == np.shares_memory(new_a, new_b)


@st.composite
def module_graphs(draw: st.DrawFn) -> tuple[Any, list[TorchObject]]:
    """Modules whose buffers are shared with kept values, other modules' fields and plain
    tables, met in any order (a buffer may come before the module that names it)."""
    pool: list[np.ndarray[Any, Any]] = []
    for index in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int64]))
        base = np.arange(draw(st.integers(2, 9)), dtype=dtype) + 100 * index
        pool.append(base)
        if draw(st.booleans()):
            pool.append(base[1:])  # a view: one storage with its base
    pick = st.sampled_from(range(len(pool)))
    names = st.sampled_from(["weight", "bias", "output", "gradInput", "addBuffer", "gradWeight"])
    modules = []
    for _ in range(draw(st.integers(1, 4))):
        fields = LuaTable((name, pool[draw(pick)]) for name in draw(st.sets(names, min_size=1)))
        modules.append(TorchObject("nn.Linear", fields))
    tables = [
        {
            f"t{i}": draw(st.one_of(pick.map(pool.__getitem__), st.sampled_from(modules)))
            for i in range(draw(st.integers(0, 3)))
        }
        for _ in range(draw(st.integers(0, 3)))
    ]
    parts = [("modules", modules), ("tables", tables), ("cache", pool[draw(pick)])]
    return LuaTable(draw(st.permutations(parts))), modules


def _emptied_by(mode: str, modules: list[TorchObject]) -> set[int]:
    return {id(m[name]) for m in modules for name in EMPTIED[mode] if name in m}


@pytest.mark.parametrize("mode", ["medium", "light"])
@pytest.mark.parametrize("fmt", ["binary", "ascii", "b32"])
@given(graph=module_graphs())
def test_modes_clear_tensors_in_place(fmt: str, mode: str, graph: Any) -> None:
    root, modules = graph
    before = [(m, dict(m.fields.items())) for m in modules]
    data = streamser.serialize(root, fmt, serial=mode)
    _check_in_place(root, streamser.deserialize(data, fmt), _emptied_by(mode, modules))
    assert all(dict(m.fields.items()) == fields for m, fields in before)  # caller's untouched
    if fmt != "ascii":  # decimal indices may grow in ascii; every binary record shrinks
        assert len(data) <= len(streamser.serialize(root, fmt))


def test_a_buffer_is_emptied_wherever_it_is_referenced() -> None:
    t = np.arange(5.0)
    lin = TorchObject(
        "nn.Linear",
        LuaTable({"weight": np.ones((5, 5)), "bias": np.zeros(5), "output": t, "gradInput": t[:0]}),
    )
    root = {"cache": t, "model": lin}  # the buffer is met before its module
    heavy, medium = (streamser.serialize(root, serial=mode) for mode in ("heavy", "medium"))
    loaded = streamser.deserialize(medium)
    assert loaded["cache"] is loaded["model"].output
    assert loaded["cache"].size == 0
    assert len(medium) < len(heavy)
    assert t.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", NN_FILES)
def test_corpus_models_are_cleared_in_place(name: str) -> None:
    fmt = "ascii" if ".ascii." in name else "b32" if ".b32." in name else "binary"
    original = streamser.load(CORPUS / name, format=fmt)
    sizes = {"heavy": len(streamser.serialize(original, fmt))}
    for mode in ("medium", "light"):
        data = streamser.serialize(original, fmt, serial=mode)
        modules = _all_modules(original)
        emptied = {
            id(m[key])
            for m in modules
            for key in fields_to_empty(mode, m)
            if isinstance(m.fields.get(key), np.ndarray)
        }
        _check_in_place(original, streamser.deserialize(data, fmt), emptied)
        sizes[mode] = len(data)
    assert sizes["light"] <= sizes["medium"] <= sizes["heavy"]


def _node(data: LuaTable, node_id: int) -> TorchObject:
    return TorchObject("nngraph.Node", LuaTable({"data": data, "id": node_id, "children": {}}))


def gmodule_example() -> tuple[TorchObject, np.ndarray[Any, Any]]:
    """An nn.gModule as nngraph builds it: x -> Identity -> Linear, forward and backward nodes
    sharing their data tables, node data holding the inputs and gradients of the last pass."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16))
    identity = TorchObject(
        "nn.Identity", LuaTable({"output": x, "gradInput": np.zeros((8, 16)), "_type": "t"})
    )
    weight = rng.standard_normal((4, 16))
    linear = TorchObject(
        "nn.Linear",
        LuaTable(
            {
                "weight": weight,
                "bias": np.zeros(4),
                "gradWeight": np.zeros((4, 16)),
                "gradBias": np.zeros(4),
                "output": x[:, :4] @ np.eye(4),
                "gradInput": identity.gradInput,  # what the identity passes back
                "addBuffer": np.ones(8),
            }
        ),
    )
    grad_output = np.ones((8, 4))
    first = LuaTable({"module": identity, "input": LuaTable.from_list([x]), "forwardNodeId": 1})
    second = LuaTable(
        {
            "module": linear,
            "input": LuaTable.from_list([identity.output]),
            "gradOutput": LuaTable.from_list([grad_output]),
            "gradOutputBuffer": grad_output.copy(),
            "mapindex": LuaTable([(1, first), (first, 1)]),
            "forwardNodeId": 2,
        }
    )
    forward = [_node(first, 1), _node(second, 2)]
    backward = [_node(second, 3), _node(first, 4)]
    fields = {
        "forwardnodes": LuaTable.from_list(forward),
        "backwardnodes": LuaTable.from_list(backward),
        "innode": forward[0],
        "outnode": forward[1],
        "modules": LuaTable.from_list([identity, linear]),
        "output": linear.output,
        "gradInput": identity.gradInput,
        "nInputs": 1,
    }
    return TorchObject("nn.gModule", LuaTable(fields)), weight


def test_gmodule_is_cleared_as_its_clear_state_does() -> None:
    model, weight = gmodule_example()
    sizes = {mode: len(streamser.serialize(model, serial=mode)) for mode in MODES}
    assert sizes["light"] < sizes["medium"] < sizes["heavy"]
    loaded = streamser.deserialize(streamser.serialize(model, serial="medium"))
    forward = loaded.forwardnodes.to_list()
    backward = loaded.backwardnodes.to_list()
    assert forward[1].data is backward[0].data  # still one data table
    assert forward[1].data["mapindex"][1] is forward[0].data
    for node in forward + backward:
        assert not {"input", "gradOutput", "gradOutputBuffer"} & set(node.data)
    linear = forward[1].data["module"]
    assert linear is loaded.modules[2]
    assert loaded.output is linear.output
    assert linear.output.size == 0
    assert loaded.gradInput is linear.gradInput is loaded.modules[1].gradInput
    np.testing.assert_array_equal(linear.weight, weight)
    assert linear.gradWeight.size  # light only
    light = streamser.deserialize(streamser.serialize(model, serial="light"))
    assert light.modules[2].gradWeight.size == 0


@pytest.mark.parametrize("name", ["gmodule_with_linear_identity.t7", "nngraph_node.t7"])
@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_real_nngraph_files(name: str, fmt: str) -> None:
    original = streamser.load(REAL_WORLD / name)
    sizes = [len(streamser.serialize(original, fmt, serial=mode)) for mode in MODES]
    assert sizes[0] >= sizes[1] >= sizes[2]
    loaded = streamser.deserialize(streamser.serialize(original, fmt, serial="medium"), fmt)
    _check_in_place(original, loaded, set())  # its buffers are empty already: all kept
    if name.startswith("gmodule"):
        assert sizes[0] > sizes[1] > sizes[2]
        for node in loaded.forwardnodes.to_list():
            assert "input" not in node.data
        assert loaded.forwardnodes[1].data is loaded.backwardnodes[9].data
    else:  # a node outside any gModule keeps its data
        assert set(loaded.data) == set(original.data)


def test_tables_are_emptied_only_where_nothing_else_keeps_them() -> None:
    kept, lost = LuaTable.from_list([np.ones(2)]), LuaTable.from_list([np.ones(3)])
    module = TorchObject("nn.ConcatTable", LuaTable({"output": kept, "gradInput": lost}))
    loaded = streamser.deserialize(streamser.serialize([module, kept], serial="medium"))
    out = loaded[1].output
    assert out is loaded[2]
    assert len(out) == 1
    assert len(loaded[1].gradInput) == 0


def test_recurrent_modules_clear_steps_and_keep_shared_clones() -> None:
    weight = np.ones((3, 3))
    step = TorchObject(
        "nn.Linear", LuaTable({"weight": weight, "output": np.ones(3), "gradInput": np.ones(3)})
    )
    clone = TorchObject(
        "nn.Linear",
        LuaTable({"weight": weight, "output": np.full(3, 2.0), "gradInput": np.ones(3)}),
    )
    outputs = LuaTable([(1, step.output), (2, clone.output)])
    lstm = TorchObject(
        "nn.LSTM",
        LuaTable(
            {
                "recurrentModule": step,
                "modules": LuaTable.from_list([step]),
                "sharedClones": LuaTable.from_list([step, clone]),
                "outputs": outputs,
                "cells": LuaTable([(1, np.ones(3)), (2, np.ones(3))]),
                "output": clone.output,
                "zeroTensor": np.zeros(3),
                "zeroMask": np.zeros(3, np.uint8),
                "rho": 5,
            }
        ),
    )
    loaded = streamser.deserialize(streamser.serialize(lstm, serial="medium"))
    assert len(loaded.outputs) == 0
    assert len(loaded.cells) == 0
    assert loaded.zeroTensor.size == 0
    assert "zeroMask" not in loaded
    first, second = loaded.sharedClones.to_list()
    assert first is loaded.recurrentModule is loaded.modules[1]
    assert first.weight is second.weight
    assert first.weight.size == 9
    assert second.output is loaded.output
    assert loaded.output.size == 0
    assert loaded.rho == 5


def test_cudnn_and_criteria_buffers() -> None:
    conv = TorchObject(
        "cudnn.SpatialConvolution",
        LuaTable({"weight": np.ones(4), "input_slice": np.ones(8), "_gradOutput": np.ones(2)}),
    )
    criterion = TorchObject(
        "nn.ClassNLLCriterion", LuaTable({"output": 0.25, "gradInput": np.ones(4)})
    )
    loaded = streamser.deserialize(streamser.serialize([conv, criterion], serial="medium"))
    assert loaded[1].input_slice.size == 0
    assert loaded[1]._gradOutput.size == 0
    assert loaded[1].weight.size == 4
    assert loaded[2].output == 0.25
    assert loaded[2].gradInput.size == 0


def test_table_stream_entries_are_cleared(tmp_path: Path) -> None:
    shared = np.arange(4.0)

    def modules() -> Any:
        for index in range(3):
            fields = {"weight": np.full(2, float(index)), "output": shared, "gradInput": np.ones(5)}
            yield f"m{index}", TorchObject("nn.Linear", LuaTable(fields))

    streamser.save(
        tmp_path / "s.t7", {"stream": streamser.TableStream(3, modules())}, serial="light"
    )
    loaded = streamser.load(tmp_path / "s.t7")["stream"]
    assert loaded["m0"].output is loaded["m2"].output
    assert loaded["m0"].output.size == 0
    assert [loaded[f"m{i}"].weight.tolist() for i in range(3)] == [[0, 0], [1, 1], [2, 2]]
    assert all(loaded[f"m{i}"].gradInput.size == 0 for i in range(3))


def test_modules_a_hook_creates_are_cleared_too() -> None:
    def renamed(value: Any) -> Any:
        if isinstance(value, TorchObject) and value.typename == "nn.Old":
            return TorchObject("nn.Linear", LuaTable(value.fields.items()))
        return value

    old = TorchObject("nn.Old", LuaTable({"weight": np.ones(2), "output": np.ones(9)}))
    loaded = streamser.deserialize(streamser.serialize([old], serial="medium", hook=renamed))
    assert loaded[1].typename == "nn.Linear"
    assert loaded[1].output.size == 0
