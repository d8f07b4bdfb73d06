"""io/sink: records gathered in a bounded buffer, big payloads passed straight through: to files
in write calls of ``WRITE_PIECE`` bytes, to other targets (compressors, collectors) in one piece,
so that a storage keeps its own zstd frames."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser.io import sink as sink_module
from streamser.io.sink import DIRECT_THRESHOLD, WRITE_PIECE, Sink, kernel_copy_target, writer_for


def identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


class Target:
    """Remembers each piece it is handed, and whether it was a copy or the caller's memory."""

    def __init__(self) -> None:
        self.pieces: list[Any] = []

    def __call__(self, data: Any) -> None:
        self.pieces.append(data)

    @property
    def joined(self) -> bytes:
        return b"".join(bytes(piece) for piece in self.pieces)


def test_small_writes_gather_until_the_target() -> None:
    target = Target()
    sink = Sink(target, target=10)
    sink.write(b"abcd")
    sink.write(b"efg")
    assert target.pieces == []
    assert sink.written == 7
    sink.write(b"hij")  # reaches 10: drained as one piece
    assert target.pieces == [b"abcdefghij"]
    sink.buffer += b"xyz"  # encoders append directly, the writer settles
    sink.settle()
    assert len(target.pieces) == 1
    sink.drain()
    assert target.joined == b"abcdefghijxyz"
    assert sink.written == 13
    assert sink.target == 10


def test_large_payloads_bypass_the_buffer_without_a_copy() -> None:
    target = Target()
    sink = Sink(target, target=1 << 20)
    sink.write(b"head")
    big = np.arange(DIRECT_THRESHOLD, dtype=np.uint8)
    view = memoryview(big)
    sink.write_large(view)
    assert target.pieces[0] == b"head"  # what was buffered goes first
    assert target.pieces[1] is view  # the caller's memory itself
    sink.write_large(memoryview(b"tiny"))
    assert bytes(sink.buffer) == b"tiny"
    assert sink.written == 4 + DIRECT_THRESHOLD + 4


def test_the_drained_piece_is_a_copy_the_target_may_keep() -> None:
    target = Target()
    sink = Sink(target, target=4)
    sink.write(b"1234")
    sink.write(b"5678")
    assert target.pieces == [b"1234", b"5678"]
    assert all(type(piece) is bytes for piece in target.pieces)


@pytest.mark.parametrize("buffering", [0, -1])
@pytest.mark.parametrize("mode", ["wb", "w+b"])
@pytest.mark.usefixtures("server_copies")
def test_kernel_copies_land_in_order_and_keep_tell_true(
    tmp_path: Path, buffering: int, mode: str
) -> None:
    """Unbuffered or under a buffer: the copy goes after what was written before it, and the
    file's position (what ``tell()`` and the next write use) moves past it."""
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 16)
    with open(tmp_path / "out.bin", mode, buffering=buffering) as out:
        sink = Sink(writer_for(out), copy_target=kernel_copy_target(out))
        sink.write(b"<")
        copied = sink.copy_from_file(str(source), 16, 1000, identity(source))
        assert copied == 1000
        assert out.tell() == 1001
        sink.write(b">")
        sink.drain()
        out.write(b"!")  # the caller's own write, after the save's bytes
    assert (tmp_path / "out.bin").read_bytes() == b"<" + source.read_bytes()[16:1016] + b">!"


def test_kernel_copies_go_only_to_plain_files_on_file_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)))
    with open(tmp_path / "local.bin", "wb") as local:  # the test folder is on a local disk
        assert not sink_module.copies_on_server(local.fileno())
        assert kernel_copy_target(local) is None
    monkeypatch.setattr(sink_module, "copies_on_server", lambda fd: True)
    with open(tmp_path / "served.bin", "wb") as served:
        assert kernel_copy_target(served) is served
    with open(tmp_path / "appended.bin", "ab") as appended:  # copy_file_range refuses O_APPEND
        assert kernel_copy_target(appended) is None
    with open(tmp_path / "text.txt", "w") as text:
        assert kernel_copy_target(text) is None
    assert kernel_copy_target(io.BytesIO()) is None
    assert Sink(Target()).copy_from_file(str(source), 0, 10, identity(source)) == 0


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_the_file_system_type_is_read() -> None:
    from streamser.io.libc import file_system_type

    fd = os.open("/dev/shm", os.O_RDONLY)
    try:
        assert file_system_type(fd) == 0x01021994  # tmpfs
    finally:
        os.close(fd)


@pytest.mark.usefixtures("server_copies")
def test_a_name_that_now_holds_another_file_is_not_copied(tmp_path: Path) -> None:
    """The kernel copy opens the file by name: if the name holds another file than the one
    the array maps (replaced since), nothing is copied and the caller writes from memory."""
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 16)
    mapped = identity(source)
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(bytes(4096))
    os.replace(replacement, source)
    with open(tmp_path / "out.bin", "wb") as out:
        sink = Sink(writer_for(out), copy_target=kernel_copy_target(out))
        assert sink.copies_files
        assert sink.copy_from_file(str(source), 0, 1000, mapped) == 0
        assert sink.copy_from_file(str(source), 0, 1000, None) == 0  # identity unknown


@pytest.mark.usefixtures("server_copies")
def test_a_failed_kernel_copy_leaves_the_position_after_what_it_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 64)
    real = sink_module.os.copy_file_range

    def half_then_fail(src: int, dst: int, count: int, *offsets: Any) -> int:
        if count < 4000:
            raise OSError(5, "Input/output error")
        return real(src, dst, count // 2, *offsets)

    monkeypatch.setattr(sink_module.os, "copy_file_range", half_then_fail)
    with open(tmp_path / "out.bin", "wb") as out:
        sink = Sink(writer_for(out), copy_target=kernel_copy_target(out))
        copied = sink.copy_from_file(str(source), 0, 6000, identity(source))
        assert copied == 3000
        assert out.tell() == 3000
        sink.write_large(memoryview(source.read_bytes()[copied:6000]))
        sink.drain()
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()[:6000]


class Recording(io.FileIO):
    """A raw file that remembers the size of every write call."""

    sizes: list[int]

    def write(self, data: Any, /) -> int:
        self.sizes.append(memoryview(data).nbytes)
        return super().write(data)


@pytest.mark.parametrize("buffered", [False, True])
def test_files_get_big_payloads_in_pieces(
    tmp_path: Path, buffered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    piece = 1 << 20
    monkeypatch.setattr(sink_module, "WRITE_PIECE", piece)  # the real size is 64 MiB
    value = {"w": np.arange(3 * piece // 4 + 5, dtype=np.float32)}  # three pieces and more
    raw = Recording(tmp_path / "out.t7", "wb")
    raw.sizes = []
    target: Any = io.BufferedWriter(raw) if buffered else raw
    with target:
        streamser.save(target, value)
    assert max(raw.sizes) <= piece
    assert sum(size == piece for size in raw.sizes) == 3
    assert (tmp_path / "out.t7").read_bytes() == streamser.serialize(value)


def test_other_targets_get_each_payload_whole() -> None:
    pieces: list[Any] = []

    class Collector:
        def write(self, data: Any) -> None:
            pieces.append(data)

    payload = memoryview(bytes(3 * WRITE_PIECE))
    writer_for(Collector())(payload)
    writer_for(io.BytesIO())(payload)  # memory, not a file: no reason to cut it
    assert pieces == [payload]
