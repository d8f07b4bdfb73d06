"""io/preallocate: blocks claimed for big payloads before they are written, only where the
offset is known and the claim helps; never a change to the bytes or the size of a file."""

from __future__ import annotations

import gzip
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser.io import preallocate
from streamser.io.preallocate import CLAIM_FROM, BlockClaimer, claimer_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux fallocate")


@pytest.fixture
def disk_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a disk file system: tmp_path, unless it is in memory (tmpfs), where claims
    are off by design; then a folder inside the checkout."""
    with open(tmp_path / "probe", "wb") as probe:
        in_memory = preallocate._in_memory(probe.fileno())
    if not in_memory:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as folder:
        yield Path(folder)


class Spy:
    """Wraps the C call: remembers (offset, length) of every claim and can make them fail."""

    def __init__(self, real: Any, fail: bool = False) -> None:
        self.real, self.fail = real, fail
        self.calls: list[tuple[int, int]] = []

    def __call__(self, fd: int, mode: int, offset: int, length: int) -> int:
        self.calls.append((offset, length))
        return -1 if self.fail else int(self.real(fd, mode, offset, length))


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    real = preallocate._load_fallocate()
    assert real is not None, "glibc and musl both have fallocate"
    recorder = Spy(real)
    monkeypatch.setattr(preallocate, "_load_fallocate", lambda: recorder)
    return recorder


def test_a_claim_gives_blocks_past_the_end_and_keeps_the_size(disk_dir: Path) -> None:
    with open(disk_dir / "claimed.bin", "wb") as out:
        claim = claimer_for(out)
        assert isinstance(claim, BlockClaimer)
        out.write(b"head")
        claim(4 << 20)
        out.flush()
        status = os.fstat(out.fileno())
    assert status.st_size == 4
    assert status.st_blocks * 512 >= 4 << 20  # the blocks exist; the size did not move


def test_saves_claim_each_big_payload_where_it_lands(disk_dir: Path, spy: Spy) -> None:
    value = {"a": np.arange(1 << 19, dtype=np.float32), "b": np.ones(3 << 18, np.float64)}
    value["small"] = np.arange(10)  # below CLAIM_FROM: written without a claim
    with open(disk_dir / "out.t7", "wb") as out:
        streamser.save(out, value)
    data = (disk_dir / "out.t7").read_bytes()
    assert data == streamser.serialize(value)
    payloads = {value["a"].tobytes(): (1 << 21), value["b"].tobytes(): 3 << 21}
    assert sorted(length for _, length in spy.calls) == sorted(payloads.values())
    for offset, length in spy.calls:
        assert data[offset : offset + length] in payloads


@pytest.mark.parametrize("server", [False, True], ids=["windows", "kernel-copy"])
def test_atomic_saves_and_memmaps_claim_once(
    disk_dir: Path, spy: Spy, monkeypatch: pytest.MonkeyPatch, server: bool
) -> None:
    """A memmap's data arrives in several pieces (mapped windows) or through copy_file_range
    (file servers): its blocks are claimed once, for all of it."""
    monkeypatch.setattr(streamser.io.sink, "copies_on_server", lambda fd: server)
    raw = disk_dir / "source.raw"
    np.arange(5 << 20, dtype=np.float32).tofile(raw)  # 20 MiB: above the kernel-copy size
    value = {"mapped": np.memmap(raw, np.float32, "r")}
    streamser.save(disk_dir / "atomic.t7", value)
    data = (disk_dir / "atomic.t7").read_bytes()
    assert data == streamser.serialize(value)
    assert [length for _, length in spy.calls] == [20 << 20]
    offset = spy.calls[0][0]
    assert data[offset : offset + (20 << 20)] == raw.read_bytes()


def test_a_failed_claim_turns_claiming_off_and_the_save_goes_on(disk_dir: Path, spy: Spy) -> None:
    spy.fail = True
    value = {str(i): np.full(1 << 18, i, np.float32) for i in range(3)}  # three 1 MiB payloads
    with open(disk_dir / "out.t7", "wb") as out:
        streamser.save(out, value)
    assert (disk_dir / "out.t7").read_bytes() == streamser.serialize(value)
    assert len(spy.calls) == 1


def test_a_save_that_fails_mid_payload_leaves_the_size_it_wrote(disk_dir: Path) -> None:
    class Failing(io.FileIO):
        budget = 3 << 20

        def write(self, data: Any, /) -> int:
            if self.budget <= 0:
                raise OSError(28, "No space left on device")
            view = memoryview(data).cast("B")[: self.budget]
            self.budget -= view.nbytes
            return super().write(view)

    target = Failing(disk_dir / "out.t7", "wb")
    with target, pytest.raises(OSError, match="No space"):
        streamser.save(target, {"w": np.ones(2 << 20, np.float32)})  # 8 MiB, claimed at once
    written = (disk_dir / "out.t7").stat().st_size
    assert written == 3 << 20  # what was written, no more: the claim kept the size


def test_no_claim_where_the_offset_is_unknown_or_it_does_not_help(disk_dir: Path) -> None:
    assert claimer_for(io.BytesIO()) is None
    with open(disk_dir / "log.t7", "ab") as appending:
        assert claimer_for(appending) is None  # writes land at an end tell() may not know
    with gzip.open(disk_dir / "out.gz", "wb") as packed:
        assert claimer_for(packed) is None  # its own positions, another file's descriptor
    read, write = os.pipe()
    with open(read, "rb") as _, open(write, "wb") as pipe:
        assert claimer_for(pipe) is None
    if Path("/dev/shm").is_dir():
        with tempfile.NamedTemporaryFile(dir="/dev/shm") as memory:
            if preallocate._in_memory(memory.fileno()):
                assert claimer_for(memory.file) is None
    with open(disk_dir / "plain.t7", "wb") as plain, open(disk_dir / "raw.t7", "wb", 0) as raw:
        assert claimer_for(plain) is not None
        assert claimer_for(raw) is not None


def test_small_payloads_are_never_claimed(disk_dir: Path, spy: Spy) -> None:
    value = [np.arange(CLAIM_FROM // 8 - 1, dtype=np.float64) for _ in range(4)]
    with open(disk_dir / "out.t7", "wb") as out:
        streamser.save(out, value)
    assert spy.calls == []
