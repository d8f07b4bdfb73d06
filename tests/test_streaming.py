"""The streaming writer: incremental tables, bounded memory, serialize's single copy."""

from __future__ import annotations

import gc
import io
import os
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser import TableStream


def _tensors(count: int, log: list[weakref.ref[Any]]) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    for i in range(count):
        array = np.full(1000, i, dtype=np.float64)
        log.append(weakref.ref(array))
        yield f"t{i}", array


def test_streamed_table_frees_each_tensor_after_writing(tmp_path: Path) -> None:
    produced: list[weakref.ref[Any]] = []
    alive_while_writing: list[int] = []

    def items() -> Iterator[tuple[str, Any]]:
        for name, array in _tensors(50, produced):
            gc.collect()
            alive_while_writing.append(sum(ref() is not None for ref in produced))
            yield name, array

    path = tmp_path / "s.t7"
    streamser.save(path, {"tensors": TableStream(50, items()), "step": 3})
    assert max(alive_while_writing) <= 2  # the one being written, and the new one
    loaded = streamser.load(path)
    assert loaded["step"] == 3
    assert [float(loaded["tensors"][f"t{i}"][0]) for i in range(50)] == list(range(50))


def test_writer_write_table_matches_a_plain_table() -> None:
    values = {f"k{i}": np.arange(i + 1) for i in range(5)}
    out = io.BytesIO()
    with streamser.Writer(out) as writer:
        writer.write_table(5, iter(values.items()))
    assert out.getvalue() == streamser.serialize(values)


def test_streamed_values_still_share_with_earlier_ones() -> None:
    base = np.arange(10, dtype=np.float32)
    value = {"base": base, "views": TableStream(2, iter([(1, base[2:4]), (2, base)]))}
    loaded = streamser.deserialize(streamser.serialize(value))
    assert loaded["views"][2] is loaded["base"]
    assert np.shares_memory(loaded["views"][1], loaded["base"])


@pytest.mark.parametrize(("declared", "actual"), [(3, 2), (2, 3)])
def test_table_stream_counts_are_checked(tmp_path: Path, declared: int, actual: int) -> None:
    path = tmp_path / "x.t7"
    stream = TableStream(declared, ((i, i) for i in range(actual)))
    with pytest.raises(streamser.UnsupportedValueError, match=f"declared {declared}"):
        streamser.save(path, stream)
    assert not path.exists()  # the failed save left nothing behind
    assert list(tmp_path.iterdir()) == []


def test_table_stream_is_written_once() -> None:
    stream = TableStream(1, [(1, 2)])
    streamser.serialize(stream)
    with pytest.raises(streamser.UnsupportedValueError, match="once"):
        streamser.serialize(stream)


def test_serialize_copies_tensor_data_once() -> None:
    big = np.arange(1 << 20, dtype=np.float64)  # 8 MiB
    pieces = streamser.api.serialize_pieces({"big": big})
    views = [piece for piece in pieces if isinstance(piece, memoryview)]
    assert any(np.shares_memory(np.frombuffer(view, np.uint8), big) for view in views)
    assert b"".join(pieces) == streamser.serialize({"big": big})


def test_memmap_source_is_streamed_in_chunks(tmp_path: Path) -> None:
    source = np.memmap(tmp_path / "raw.bin", dtype=np.float32, mode="w+", shape=(3, 1 << 20))
    source[:] = 1.5
    path = tmp_path / "m.t7"
    streamser.save(path, {"w": source, "row": source[1]})
    loaded = streamser.load(path)
    assert float(loaded["w"].sum()) == 1.5 * 3 * (1 << 20)
    assert np.shares_memory(loaded["row"], loaded["w"])


def _big_memmap(path: Path, mode: str) -> np.memmap[Any, Any]:
    source = np.memmap(path, dtype=np.float32, mode="w+", shape=(5, 1 << 20))  # 20 MiB
    source[:] = np.arange(5, dtype=np.float32)[:, None]
    source.flush()
    del source
    return np.memmap(path, dtype=np.float32, mode=mode, shape=(5, 1 << 20))


def _counting_copies(monkeypatch: Any) -> list[int]:
    calls: list[int] = []
    real = streamser.io.sink.os.copy_file_range

    def counting(*args: Any) -> int:
        calls.append(args[2])
        result: int = real(*args)
        return result

    monkeypatch.setattr(streamser.io.sink.os, "copy_file_range", counting)
    return calls


@pytest.mark.usefixtures("server_copies")
def test_shared_memmap_goes_through_the_kernel(tmp_path: Path, monkeypatch: Any) -> None:
    calls = _counting_copies(monkeypatch)
    source = _big_memmap(tmp_path / "raw.bin", "r+")
    source[4, :3] = -1.0  # an edit still in the page cache: the kernel copy sees it
    streamser.save(tmp_path / "k.t7", {"w": source})
    assert calls  # the storage bytes went file to file
    loaded = streamser.load(tmp_path / "k.t7")["w"]
    assert loaded[4, :4].tolist() == [-1.0, -1.0, -1.0, 4.0]
    assert loaded[:, 10].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.usefixtures("server_copies")
def test_a_memmap_already_faulted_in_is_written_through_its_mapping(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Through a mapping this process has already touched, write() is the fast path (no page
    faults left to take); the kernel copy is for mappings not yet read."""
    calls = _counting_copies(monkeypatch)
    source = _big_memmap(tmp_path / "raw.bin", "r")
    assert float(source.sum()) == 1.0 * (0 + 1 + 2 + 3 + 4) * (1 << 20)  # every page faulted in
    streamser.save(tmp_path / "k.t7", {"w": source})
    assert calls == []
    assert (tmp_path / "k.t7").read_bytes() == streamser.serialize({"w": np.asarray(source)})
    fresh = _big_memmap(tmp_path / "raw.bin", "r")  # the same file, a new mapping
    streamser.save(tmp_path / "f.t7", {"w": fresh})
    assert calls
    assert (tmp_path / "f.t7").read_bytes() == (tmp_path / "k.t7").read_bytes()


@pytest.mark.usefixtures("server_copies")
@pytest.mark.parametrize("mode", ["wb", "w+b"])
def test_a_memmap_reaches_a_buffered_file_through_the_kernel(
    tmp_path: Path, monkeypatch: Any, mode: str
) -> None:
    """``open(path, "wb")`` is a buffered file: flushed before the copy and moved past it
    after, so what the caller writes next lands after the saved value."""
    calls = _counting_copies(monkeypatch)
    source = _big_memmap(tmp_path / "raw.bin", "r")
    value = {"w": source, "name": "first"}
    with open(tmp_path / "two.t7", mode) as out:
        streamser.save(out, value)
        assert out.tell() == out.seek(0, 2)
        streamser.save(out, "second")
    assert calls
    expected = streamser.serialize({"w": np.array(source), "name": "first"})
    data = (tmp_path / "two.t7").read_bytes()
    assert data == expected + streamser.serialize("second")


@pytest.mark.parametrize("populate", [True, False], ids=["madvise", "touched"])
def test_a_fresh_memmap_on_a_local_disk_is_written_a_window_at_a_time(
    tmp_path: Path, monkeypatch: Any, populate: bool
) -> None:
    """No file server: no kernel copy; the user's own mapping is faulted in a window at a time
    (one madvise, or a read per page where the kernel refuses it), written, and let go of."""
    from streamser.io import arrays, windows

    calls = _counting_copies(monkeypatch)
    monkeypatch.setattr(streamser.io.sink, "copies_on_server", lambda fd: False)
    monkeypatch.setattr(windows, "WINDOW", 3 << 20)  # 20 MiB in 7 windows
    monkeypatch.setattr(windows, "_populate_refused", not populate)
    handed: list[int] = []
    real = streamser.codecs.binary.write_in_windows

    def counting(array: Any, place: Any, write: Any, start: int = 0) -> None:
        real(array, place, lambda view: (handed.append(view.nbytes), write(view)), start)

    monkeypatch.setattr(streamser.codecs.binary, "write_in_windows", counting)
    source = _big_memmap(tmp_path / "raw.bin", "r")
    with open(tmp_path / "w.t7", "wb") as out:  # a buffered file, as users open them
        streamser.save(out, {"w": source, "tail": 1})
    assert calls == []
    assert handed == [3 << 20] * 6 + [2 << 20]
    assert not arrays.mostly_mapped_in(source)  # each window let go of once written
    expected = streamser.serialize({"w": np.array(source), "tail": 1})
    assert (tmp_path / "w.t7").read_bytes() == expected


def test_edits_through_a_memmap_survive_its_windows_being_let_go(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Letting a written window go (MADV_DONTNEED) drops only page-table entries: an edit made
    through the user's writable mapping stays in the page cache, in the array and in the file."""
    monkeypatch.setattr(streamser.io.sink, "copies_on_server", lambda fd: False)
    source = _big_memmap(tmp_path / "raw.bin", "r+")
    source[2, 7] = -3.5  # a dirty page of a shared mapping, not yet written back
    streamser.save(tmp_path / "edit.t7", {"w": source})
    assert streamser.load(tmp_path / "edit.t7")["w"][2, 7] == -3.5
    assert source[2, 7] == -3.5
    source.flush()
    del source
    reread = np.fromfile(tmp_path / "raw.bin", np.float32).reshape(5, 1 << 20)
    assert reread[2, 7] == -3.5


@pytest.mark.parametrize("server", [False, True], ids=["local", "file-server"])
def test_a_memmap_whose_file_was_replaced_saves_the_array_s_bytes(
    tmp_path: Path, monkeypatch: Any, server: bool
) -> None:
    """The name now holds another file (an atomic replace): what is saved is what the array
    holds, the file it maps, on every target."""
    monkeypatch.setattr(streamser.io.sink, "copies_on_server", lambda fd: server)
    source = _big_memmap(tmp_path / "raw.bin", "r")
    other = np.memmap(tmp_path / "new.bin", dtype=np.float32, mode="w+", shape=(5, 1 << 20))
    other[:] = 9.0
    other.flush()
    del other
    os.replace(tmp_path / "new.bin", tmp_path / "raw.bin")
    expected = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 1 << 20), np.float32)
    streamser.save(tmp_path / "path.t7", {"w": source})
    with open(tmp_path / "file.t7", "wb") as out:
        streamser.save(out, {"w": source})
    for saved in (tmp_path / "path.t7", tmp_path / "file.t7"):
        np.testing.assert_array_equal(streamser.load(saved)["w"], expected)
    np.testing.assert_array_equal(
        streamser.deserialize(streamser.serialize({"w": source}))["w"], expected
    )


def test_a_memmap_whose_file_is_gone_is_still_saved(tmp_path: Path) -> None:
    source = _big_memmap(tmp_path / "raw.bin", "r")
    (tmp_path / "raw.bin").unlink()  # the mapping keeps the data; the path no longer does
    streamser.save(tmp_path / "gone.t7", {"w": source})
    np.testing.assert_array_equal(streamser.load(tmp_path / "gone.t7")["w"], source)


def test_a_memmap_whose_file_was_truncated_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """Reading the array past the file's new end would be SIGBUS: the save refuses it with a
    clear error, and the file it would have replaced is untouched."""
    source = _big_memmap(tmp_path / "raw.bin", "r")
    os.truncate(tmp_path / "raw.bin", 1 << 20)
    (tmp_path / "old.t7").write_bytes(streamser.serialize({"w": 1}))
    before = (tmp_path / "old.t7").read_bytes()
    with pytest.raises(streamser.UnsupportedValueError, match="truncated after it was mapped"):
        streamser.save(tmp_path / "old.t7", {"w": source})
    assert (tmp_path / "old.t7").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.t7", "raw.bin"]


def test_copy_on_write_memmap_is_written_from_memory(tmp_path: Path, monkeypatch: Any) -> None:
    calls: list[int] = []
    monkeypatch.setattr(streamser.io.sink.os, "copy_file_range", lambda *a: calls.append(1) or 0)
    source = _big_memmap(tmp_path / "raw.bin", "c")
    source[0, 0] = 42.0  # private to this process: the file still says 0
    streamser.save(tmp_path / "c.t7", {"w": source})
    assert calls == []
    assert streamser.load(tmp_path / "c.t7")["w"][0, 0] == 42.0
