"""``streamser.open``: lazy root, path access, the tensor index, slices, lifetime."""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser import LuaTable

CORPUS = Path(__file__).parent / "corpus"


def _mapped(array: np.ndarray[Any, Any]) -> bool:
    """True when ``array`` is a view of a file mapping (its data was not read to make it)."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    weight = np.arange(60, dtype=np.float32).reshape(10, 6)
    value = {
        "model": {"modules": [{"weight": weight, "bias": np.ones(10)}, {"weight": weight[2:5]}]},
        "optimState": {"dfdx": np.zeros(3, np.int64), "lr": 0.1},
    }
    path = tmp_path / "ckpt.t7"
    streamser.save(path, value)
    return path


def test_paths_and_get(checkpoint: Path) -> None:
    with streamser.open(checkpoint) as f:
        assert f.format.name == "binary"
        weight = f["model.modules.1.weight"]
        assert weight.shape == (10, 6)
        assert _mapped(weight)
        assert f.get("optimState", "lr") == 0.1
        assert f.get("optimState", "missing", default=7) == 7
        assert "model.modules.2.weight" in f
        assert "model.modules.3" not in f
        assert sorted(f.keys()) == ["model", "optimState"]
        with pytest.raises(KeyError, match="nothing"):
            _ = f["model.nothing"]


def test_tensor_index(checkpoint: Path) -> None:
    data = checkpoint.read_bytes()
    with streamser.open(checkpoint) as f:
        index = {info.path: info for info in f.tensors()}
        weight = index["model.modules[1].weight"]
        view = index["model.modules[2].weight"]
    assert weight.typename == "torch.FloatTensor"
    assert (weight.shape, weight.dtype, weight.nbytes) == ((10, 6), np.float32, 240)
    assert view.storage_offset == weight.storage_offset  # one storage, shared
    assert view.offset == weight.offset + 2 * 6 * 4
    stored = np.frombuffer(data, np.float32, count=60, offset=weight.offset)
    assert stored.tolist() == list(range(60))  # the offset points at the bytes in the file
    assert index["optimState.dfdx"].typename == "torch.LongTensor"


def test_get_slice_reads_rows(checkpoint: Path) -> None:
    with streamser.open(checkpoint) as f:
        sliced = f.get_slice("model.modules.1.weight")
        rows = sliced[3:5]
    assert sliced.shape == (10, 6)
    assert rows.tolist() == [list(range(18, 24)), list(range(24, 30))]
    assert not _mapped(rows)  # a copy: reading it touched only those rows of the file


def test_subtree_load_copy(checkpoint: Path) -> None:
    with streamser.open(checkpoint) as f:
        modules = f.load("model.modules", copy=True)
    first, second = modules.to_list()
    assert not _mapped(first["weight"])
    assert np.shares_memory(first["weight"], second["weight"])  # sharing survives the copy
    first["weight"][0, 0] = 100.0
    assert second["weight"][0, 0] == 12.0  # row 2 of the original, unaffected


def test_views_outlive_the_handle(checkpoint: Path) -> None:
    f = streamser.open(checkpoint)
    weight = f["model.modules.1.weight"]
    f.close()
    assert weight.sum() == sum(range(60))
    with pytest.raises(streamser.StreamserError, match="closed"):
        f.get("model")


@pytest.mark.parametrize("name", ["nn_seq.ascii.t7", "nn_linear.b32.t7", "nn_seq.binary.t7"])
def test_every_format_opens(name: str) -> None:
    with streamser.open(CORPUS / name) as f:
        tensors = f.tensors()
        assert tensors
        located = [info.offset is not None for info in tensors if info.nbytes]
        assert all(located) == (not name.endswith("ascii.t7"))
        expected = "weight" if "linear" in name else "modules"
        assert isinstance(f.get(expected), (LuaTable, np.ndarray))


def test_open_rejects_damage(tmp_path: Path) -> None:
    path = tmp_path / "bad.t7"
    path.write_bytes(b"\x04\x00\x00\x00\x01\x00")
    with pytest.raises(streamser.TruncatedError):
        streamser.open(path)
