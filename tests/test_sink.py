"""How payloads reach their target: files in write calls of ``WRITE_PIECE`` bytes, other
targets (compressors, collectors) in one piece, so that a storage keeps its own zstd frames."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser.io.sink import WRITE_PIECE, writer_for


class Recording(io.FileIO):
    """A raw file that remembers the size of every write call."""

    sizes: list[int]

    def write(self, data: Any, /) -> int:
        self.sizes.append(memoryview(data).nbytes)
        return super().write(data)


@pytest.mark.parametrize("buffered", [False, True])
def test_files_get_big_payloads_in_pieces(tmp_path: Path, buffered: bool) -> None:
    value = {"w": np.arange(3 * WRITE_PIECE // 4 + 5, dtype=np.float32)}  # three pieces and more
    raw = Recording(tmp_path / "out.t7", "wb")
    raw.sizes = []
    target: Any = io.BufferedWriter(raw) if buffered else raw
    with target:
        streamser.save(target, value)
    assert max(raw.sizes) <= WRITE_PIECE
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
