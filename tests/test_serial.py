"""Serialization modes, hooks and casts, checked against Torch7's and dpnn's own files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser import LuaTable, Storage, TorchObject
from streamser.graph.walk import walk
from streamser.tools.serial import add_serial_fields, fields_to_empty, is_module

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
