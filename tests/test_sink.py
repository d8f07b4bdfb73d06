"""io/sink: records gathered in a bounded buffer, big payloads passed straight through: to files
in write calls of ``WRITE_PIECE`` bytes, to other targets (compressors, collectors) in one piece,
so that a storage keeps its own zstd frames."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser.io import sink as sink_module
from streamser.io.sink import DIRECT_THRESHOLD, WRITE_PIECE, Sink, raw_fd, writer_for


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


def test_kernel_copies_only_to_raw_files(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 16)
    with open(tmp_path / "out.bin", "wb", buffering=0) as raw:
        sink = Sink(writer_for(raw), fd=raw_fd(raw))
        sink.write(b"<")
        copied = sink.copy_from_file(str(source), 16, 1000)
        sink.write_large(memoryview(source.read_bytes()[16 + copied : 1016]))
        sink.write(b">")
        sink.drain()
    assert (tmp_path / "out.bin").read_bytes() == b"<" + source.read_bytes()[16:1016] + b">"
    assert raw_fd(io.BytesIO()) is None
    assert Sink(Target()).copy_from_file(str(source), 0, 10) == 0  # no descriptor: the caller


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
