"""The public verbs and value shapes: streams, storages, CUDA names, legacy records, mappings."""

from __future__ import annotations

import io
import itertools
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import streamser
from streamser import LuaFunction, LuaTable, Storage, TorchObject

CORPUS = Path(__file__).parent / "corpus"


def _int(value: int) -> bytes:
    return struct.pack("<i", value)


def _string(text: bytes) -> bytes:
    return _int(len(text)) + text


@pytest.mark.parametrize("fmt", ["binary", "ascii", "b32"])
def test_several_values_in_one_stream(tmp_path: Path, fmt: str) -> None:
    shared = {"x": 1}
    path = tmp_path / "many.t7"
    with path.open("wb") as f, streamser.Writer(f, format=fmt) as writer:
        writer.write_object(shared)
        writer.write_int(3)
        writer.write_object(shared)  # a back-reference to the first value
        writer.write_double(0.5)
        writer.write_string("tail")
    with path.open("rb") as f:
        reader = streamser.Reader(f, format=fmt)
        first, n, again = reader.read_object(), reader.read_int(), reader.read_object()
        assert (n, reader.read_double(), reader.read_string()) == (3, 0.5, "tail")
        assert reader.at_end()
        assert f.tell() == path.stat().st_size  # the file position follows the reader
    assert first["x"] == 1
    assert again is first


def test_reader_on_unmappable_stream() -> None:
    data = streamser.serialize([1, 2]) + streamser.serialize("next")

    class Pipe(io.RawIOBase):  # no fileno, not seekable
        def __init__(self) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            return self._inner.readinto(buffer)

    reader = streamser.Reader(io.BufferedReader(Pipe()))
    assert reader.read_object().to_list() == [1, 2]
    assert reader.read_object() == "next"


def test_storage_stays_a_storage() -> None:
    storage = Storage(np.arange(5, dtype=np.int16))
    assert storage.typename == "torch.ShortStorage"
    tensor = storage.array[1:4]
    loaded = streamser.deserialize(streamser.serialize({"s": storage, "t": tensor}))
    assert isinstance(loaded["s"], Storage)
    assert isinstance(loaded["t"], np.ndarray)
    assert loaded["t"].base is loaded["s"].array  # the tensor views the same storage
    assert list(loaded["t"]) == [1, 2, 3]
    assert np.asarray(loaded["s"]).tolist() == [0, 1, 2, 3, 4]


def test_cuda_class_names_survive_a_round_trip() -> None:
    storage = Storage(np.ones(4, np.float32), "torch.CudaStorage")
    value = {"t": storage.array[:2], "s": storage, "e": np.empty(0, np.float32)}
    data = streamser.serialize(value)
    assert b"torch.CudaTensor" in data
    assert b"torch.CudaStorage" in data
    loaded = streamser.deserialize(data)
    assert loaded["t"].dtype == np.float32
    assert loaded["s"].typename == "torch.CudaStorage"
    assert streamser.serialize(loaded) == data


@pytest.mark.parametrize(
    ("typename", "dtype"),
    [
        ("torch.CudaDoubleTensor", np.float64),
        ("torch.CudaLongTensor", np.int64),
        ("torch.CudaHalfTensor", np.float16),
        ("torch.CudaByteTensor", np.uint8),
    ],
)
def test_cuda_tensors_load_on_the_cpu(typename: str, dtype: type) -> None:
    storage_name = typename.replace("Tensor", "Storage").encode()
    itemsize = np.dtype(dtype).itemsize
    data = (
        _int(4)
        + _int(1)
        + _string(b"V 1")
        + _string(typename.encode())
        + _int(1)
        + struct.pack("<qqq", 2, 1, 1)
        + _int(4)
        + _int(2)
        + _string(b"V 1")
        + _string(storage_name)
        + struct.pack("<q", 2)
        + bytes(range(2 * itemsize))
    )
    loaded = streamser.deserialize(data, format="binary")
    assert loaded.dtype == dtype
    assert loaded.shape == (2,)
    assert streamser.serialize(loaded) == data


def test_old_files_without_version_string() -> None:
    data = (
        _int(4)
        + _int(1)
        + _string(b"nn.Identity")  # no "V 1": the first string is the class
        + _int(3)
        + _int(2)
        + _int(1)
        + _int(2)
        + _string(b"k")
        + _int(5)
        + _int(1)
    )
    loaded = streamser.deserialize(data, format="binary")
    assert isinstance(loaded, TorchObject)
    assert (loaded.typename, loaded.version, loaded.k) == ("nn.Identity", 0, True)


@pytest.mark.parametrize("tag", [6, 7, 8])
def test_functions_of_every_tag_round_trip(tag: int) -> None:
    index = b"" if tag == 6 else _int(1)  # legacy functions take no index
    table_index = 1 if tag == 6 else 2
    upvalues = (
        _int(3)
        + _int(table_index)
        + _int(1)
        + _int(1)
        + struct.pack("<d", 1)
        + _int(1)
        + struct.pack("<d", 7)
    )
    data = _int(tag) + index + _string(b"\x1bLJ\x02fake bytecode") + upvalues
    loaded = streamser.deserialize(data, format="binary")
    assert isinstance(loaded, LuaFunction)
    assert loaded.tag == tag
    assert loaded.bytecode == b"\x1bLJ\x02fake bytecode"
    assert loaded.upvalues.to_list() == [7]
    assert streamser.serialize(loaded) == data


def test_lua_table_keys_follow_lua_rules() -> None:
    table = LuaTable()
    table[1] = "one"
    table[True] = "true"
    table[1.0] = "float one is one"
    table[b"k"] = "bytes"
    table["k"] = "str replaces bytes"
    key_table = LuaTable()
    table[key_table] = "table key"
    assert len(table) == 4
    assert table[1] == "float one is one"
    assert table[True] == "true"
    assert table["k"] == "str replaces bytes"
    assert table[key_table] == "table key"
    assert LuaTable() not in table
    with pytest.raises(ValueError, match="NaN"):
        table[float("nan")] = 1
    loaded = streamser.deserialize(streamser.serialize(table))
    assert loaded[1] == "float one is one"
    assert loaded[True] == "true"
    assert not LuaTable({"a": 1}).is_list()
    with pytest.raises(ValueError, match=r"1\.\.n"):
        LuaTable({"a": 1}).to_list()


def test_torch_object_access() -> None:
    value = streamser.load(CORPUS / "nn_linear.binary.t7")
    assert value.typename == "nn.Linear"
    assert value.version == 1
    assert value["weight"] is value.weight
    assert "bias" in value
    assert "nothing" not in value
    assert set(value) >= {"weight", "bias", "gradWeight", "output"}
    with pytest.raises(AttributeError, match="nothing"):
        _ = value.nothing


def test_lazy_views_are_copy_on_write(tmp_path: Path) -> None:
    path = tmp_path / "w.t7"
    streamser.save(path, {"w": np.arange(8, dtype=np.float32)})
    before = path.read_bytes()
    loaded = streamser.load(path)
    loaded["w"][:] = -1  # writable, private to this process
    assert path.read_bytes() == before
    assert streamser.load(path)["w"].tolist() == list(range(8))


def test_views_survive_saving_over_their_file(tmp_path: Path) -> None:
    path = tmp_path / "w.t7"
    streamser.save(path, {"w": np.arange(1000, dtype=np.float64)})
    lazy = streamser.load(path)["w"]
    streamser.save(path, {"w": np.zeros(10)})  # atomic: a new file, the mapped one untouched
    assert lazy.sum() == sum(range(1000))
    assert streamser.load(path)["w"].tolist() == [0] * 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.t7"]


@pytest.mark.parametrize("mmap", [True, False])
def test_load_file_object_and_eager(tmp_path: Path, mmap: bool) -> None:
    path = tmp_path / "a.t7"
    streamser.save(path, {"a": np.arange(6).reshape(2, 3)}, format="b32")
    with path.open("rb") as f:
        loaded = streamser.load(f, mmap=mmap)
    assert loaded["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert loaded["a"].dtype == np.int64


def test_memmap_inputs_share_one_storage(tmp_path: Path) -> None:
    source = np.memmap(tmp_path / "raw.bin", dtype=np.float32, mode="w+", shape=(4, 5))
    source[:] = np.arange(20).reshape(4, 5)
    value = {"all": source, "rows": source[1:3], "col": source[:, 2]}
    data = streamser.serialize(value)
    assert data.count(b"torch.FloatStorage") == 1
    loaded = streamser.deserialize(data)
    assert np.shares_memory(loaded["rows"], loaded["all"])
    assert loaded["col"].tolist() == [2, 7, 12, 17]
    compact = streamser.deserialize(streamser.serialize(value, compact=True))
    assert not np.shares_memory(compact["rows"], compact["all"])
    assert compact["rows"].base.size == 10  # its own storage, only the rows it shows


def test_numpy_scalars_and_tuples_are_accepted() -> None:
    value = (np.float32(0.5), np.int64(3), np.bool_(True), "s")
    loaded = streamser.deserialize(streamser.serialize(value)).to_list()
    assert loaded == [0.5, 3, True, "s"]
    assert type(loaded[1]) is int
    assert type(loaded[2]) is bool


def test_non_native_and_zero_dim_arrays() -> None:
    big_endian = np.arange(4, dtype=">i4")
    zero_dim = np.array(2.5)
    loaded = streamser.deserialize(streamser.serialize([big_endian, zero_dim])).to_list()
    assert loaded[0].tolist() == [0, 1, 2, 3]
    assert loaded[0].dtype == np.int32
    assert loaded[1].shape == (1,)
    assert loaded[1][0] == 2.5


def test_bad_format_names() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        streamser.serialize(1, format="text")


def test_stale_temporaries_of_killed_saves_are_removed(tmp_path: Path) -> None:
    """Leftovers are judged by their lock, not by the PID in their name: a temporary nobody
    holds is removed (even one named after this very process), a held one is kept."""
    import fcntl

    stale = tmp_path / f".m.t7.{os.getpid()}-abcd.streamser-tmp"  # this PID, but unlocked
    running = tmp_path / ".m.t7.1-ef01.streamser-tmp"  # a save in progress holds its lock
    other = tmp_path / ".n.t7.1-0000.streamser-tmp"  # another target's
    for path in (stale, running, other):
        path.write_bytes(b"partial")
    with open(running, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        streamser.save(tmp_path / "m.t7", [1])
        assert running.exists()
    assert not stale.exists()
    assert other.exists()


def test_stream_booleans_byte_count_and_plain_dicts() -> None:
    out = io.BytesIO()
    with streamser.Writer(out, format="ascii") as writer:
        writer.write_bool(True)
        writer.write_bool(False)
        assert writer.bytes_written == 4  # "1\n0\n"
    reader = streamser.Reader(out.getvalue(), format="ascii")
    assert (reader.read_bool(), reader.read_bool()) == (True, False)
    table = streamser.deserialize(streamser.serialize({"a": 1, 2: "b"}))
    assert table.to_dict() == {"a": 1, 2: "b"}
    del table["a"]
    assert list(table) == [2]


def test_save_starts_write_back_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path save asks for write-back of each 32 MiB written, in order, never past the end."""
    import streamser.io.writeback

    calls: list[tuple[int, int]] = []
    real = streamser.io.writeback._sync_file_range
    assert real is not None  # Linux: the call exists on the project's machines

    def recording(fd: int, start: int, count: int, flags: int) -> int:
        calls.append((start, count))
        return real(fd, start, count, flags)

    monkeypatch.setattr(streamser.io.writeback, "_sync_file_range", recording)
    value = {f"t{i}": np.full(5 << 20, i, np.float32) for i in range(5)}  # 100 MiB
    path = tmp_path / "big.t7"
    streamser.save(path, value)
    assert path.read_bytes() == streamser.serialize(value)
    assert len(calls) >= 2  # 100 MiB: at least every 32 MiB before the last
    assert [start for start, _ in calls] == [0, *itertools.accumulate(c for _, c in calls)][:-1]
    assert sum(count for _, count in calls) <= path.stat().st_size


@pytest.mark.usefixtures("server_copies")
def test_write_back_covers_bytes_copied_in_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """np.memmap inputs reach the file by copy_file_range, past the file object's write():
    write-back is still asked for them, from the file's position."""
    import streamser.io.writeback

    calls: list[tuple[int, int]] = []
    real = streamser.io.writeback._sync_file_range
    assert real is not None

    def recording(fd: int, start: int, count: int, flags: int) -> int:
        calls.append((start, count))
        return real(fd, start, count, flags)

    monkeypatch.setattr(streamser.io.writeback, "_sync_file_range", recording)
    raw = tmp_path / "source.raw"
    np.arange(10 << 20, dtype=np.float32).tofile(raw)  # 40 MiB
    mapped = np.memmap(raw, np.float32, "r")
    value = {"a": mapped[: 5 << 20], "b": mapped[5 << 20 :], "c": np.ones(3)}
    path = tmp_path / "mapped.t7"
    streamser.save(path, value)
    assert path.read_bytes() == streamser.serialize(value)
    assert calls, "the 40 MiB copied in the kernel were never handed to write-back"
    assert calls[0][0] == 0
    assert [start for start, _ in calls] == [0, *itertools.accumulate(c for _, c in calls)][:-1]
    assert sum(count for _, count in calls) >= 32 << 20


def test_save_with_swapped_arguments_says_so(tmp_path: Path) -> None:
    target = tmp_path / "model.t7"
    with pytest.raises(streamser.StreamserError, match=r"look swapped, it is streamser\.save"):
        streamser.save({"w": np.ones(2)}, str(target))  # type: ignore[arg-type]
    with pytest.raises(streamser.UnsupportedValueError, match="not to a int"):
        streamser.save(3, {"w": 1})  # type: ignore[arg-type]
    assert not target.exists()


def test_load_refuses_bytes_as_a_path() -> None:
    data = streamser.serialize({"a": 1})
    for source in (b"/a/path", data, bytearray(data), memoryview(data)):
        with pytest.raises(streamser.StreamserError, match="bytes are data, not a path"):
            streamser.load(source)  # type: ignore[arg-type]
    assert streamser.load(io.BytesIO(data))["a"] == 1  # a file object of bytes is fine
