"""Files from other projects, written by real Lua Torch7: python-torchfile's tests and OpenCV's
Torch importer nets (``tests/real-world``, unchanged copies of ``../shared/real-world``).

Every one loads as its project expects, round-trips byte for byte, opens with an index whose
every path works, and passes ``streamser dis`` and ``verify`` in every format, plain and
compressed.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import REAL_WORLD, SHARED, real_world

import streamser
from streamser import LuaFunction, LuaTable, Storage, TorchObject
from streamser.cli.main import main

TORCHFILE = real_world("torchfile")
NETS = real_world("opencv-nets")
ALL = TORCHFILE + NETS


def _ids(path: Path) -> str:
    return path.name


def _quietly(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main(list(argv))
    return status, out.getvalue()


def test_the_copies_are_unchanged() -> None:
    shared = SHARED / "real-world"
    if not shared.is_dir():
        pytest.skip(f"{shared} is absent: nothing to compare the copy with")
    for folder in ("torchfile", "opencv-nets"):
        names = sorted(p.name for p in (shared / folder).iterdir())
        assert names == sorted(p.name for p in (REAL_WORLD / folder).iterdir())
        for name in names:
            assert (shared / folder / name).read_bytes() == (
                REAL_WORLD / folder / name
            ).read_bytes()
    assert (shared / "README.md").read_bytes() == (REAL_WORLD / "README.md").read_bytes()
    assert len(TORCHFILE) == 15


def _torchfile(name: str) -> Any:
    return streamser.load(REAL_WORLD / "torchfile" / name)


def test_torchfile_files_read_as_torchfile_expects() -> None:
    assert _torchfile("hello=123.t7").to_dict() == {"hello": 123}
    blah = _torchfile("custom_class.t7")
    assert isinstance(blah, TorchObject)
    assert blah.typename == "Blah"
    assert len(blah) == 0
    recursive = _torchfile("recursive_class.t7")
    assert recursive.a is recursive
    [(key, value)] = _torchfile("recursive_kv_table.t7").items()
    assert isinstance(key, LuaTable)
    assert key is value
    listed = ["hello", "world", "third item", 123]
    assert _torchfile("list_table.t7").to_list() == listed
    assert _torchfile("map_table1.t7").to_dict() == {0: "zero", **dict(enumerate(listed, 1))}
    assert _torchfile("map_table2.t7").to_dict() == {
        **dict(enumerate(listed, 1)),
        "a": "non number key",
    }
    np.testing.assert_array_equal(_torchfile("doubletensor.t7"), [[1, 2, 3], [4, 5, 6.9]])
    floats = _torchfile("floattensor.t7")
    assert floats.dtype == np.float32
    assert floats.shape == (2, 3, 4)
    assert isinstance(_torchfile("function.t7"), LuaFunction)
    assert isinstance(_torchfile("function_upvals.t7").upvalues, LuaTable)
    assert dict(_torchfile("tds_hash.t7")) == {1: 2, 2: 3, 10: 11}
    assert _torchfile("tds_vec.t7") == [123, 456]
    assert _torchfile("nngraph_node.t7").typename == "nngraph.Node"
    assert _torchfile("gmodule_with_linear_identity.t7").typename == "nn.gModule"


@pytest.mark.parametrize("path", ALL, ids=_ids)
def test_round_trip_is_byte_exact(path: Path) -> None:
    data = path.read_bytes()
    with streamser.open(path) as f:
        fmt, end = f.format.name, f.end
    assert end == len(data)
    assert streamser.serialize(streamser.deserialize(data), fmt) == data
    assert streamser.serialize(streamser.load(path, mmap=False), fmt) == data


@pytest.mark.parametrize("path", ALL, ids=_ids)
def test_every_indexed_path_works(path: Path) -> None:
    with streamser.open(path) as f:
        rows = f.tensors()
        for row in rows:
            assert row.path in f
            found = f[row.path]
            array = found.array if isinstance(found, Storage) else found
            assert array.shape == row.shape
            assert f.get_slice(row.path).shape == row.shape
            np.testing.assert_array_equal(np.asarray(f.get_slice(row.path)), array)
        arrays = dict(f.arrays())
    assert list(arrays) == [row.path for row in rows]


def test_the_nets_hold_their_layers_and_data() -> None:
    net = streamser.load(REAL_WORLD / "opencv-nets" / "net_conv_net.dat")
    assert net.typename == "nn.Sequential"
    conv = net.modules[1]
    assert conv.typename == "nn.SpatialConvolution"
    assert conv.weight.ndim == 4
    sample = streamser.load(REAL_WORLD / "opencv-nets" / "net_simple_input.txt")
    assert isinstance(sample, np.ndarray)
    assert sample.size > 0


@pytest.mark.parametrize("fmt", ["binary", "b32", "ascii"])
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_dis_and_verify_in_every_format(tmp_path: Path, fmt: str, compress: str | None) -> None:
    for path in ALL:
        target = tmp_path / f"{path.name}.{fmt}"
        streamser.save(target, streamser.load(path), format=fmt, compress=compress)
        for command in ("dis", "verify"):
            status, output = _quietly(command, str(target))
            assert status == 0, f"{command} {path.name} ({fmt}, {compress}): {output[-400:]}"
        status, output = _quietly("dis", str(target))
        with streamser.open(target) as f:  # b32 without longs reads as binary: the same bytes
            assert f.format.name in (fmt, "binary")
            assert f"records, {f.format.name})" in output.splitlines()[-1]


@pytest.mark.parametrize("path", ALL, ids=_ids)
def test_dis_and_verify_the_originals(path: Path) -> None:
    for command in ("dis", "verify"):
        status, output = _quietly(command, str(path))
        assert status == 0, output[-400:]
