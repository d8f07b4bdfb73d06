"""Big reads and pre-faults split across a few threads (``streamser.io.parallel``).

Whatever the number of threads, a load reads the same values, eagerly, mapped or pre-faulted.
The size from which threads start is lowered here, so that small files exercise every path.
"""

from __future__ import annotations

import itertools
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import deadline

import streamser
from streamser.io import mapping, parallel
from streamser.io.parallel import ranges, resolve_threads, run_split

PIECE = 1 << 16


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 4 * PIECE)
    monkeypatch.setattr(parallel, "_ALIGN", 4096)
    monkeypatch.setattr(parallel, "PIECE_BYTES", PIECE + 100)  # rounded down to the alignment


def _value() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    return {
        "big": rng.standard_normal(100_003).astype(np.float32),  # several pieces, odd length
        "small": np.arange(10, dtype=np.int64),
        "more": rng.standard_normal((300, 200)),
    }


def test_ranges_cover_the_total_in_aligned_pieces() -> None:
    for total in (0, 1, 4 * PIECE - 1, 4 * PIECE, 10**6 + 7):
        for threads in (1, 2, 3, 4, 16):
            pieces = ranges(total, threads)
            assert pieces[0][0] == 0
            assert pieces[-1][1] == total
            assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
            assert all(start % 4096 == 0 for start, _ in pieces)
            if total < 4 * PIECE or threads == 1:
                assert len(pieces) == 1
            else:
                assert all(end - start <= PIECE for start, end in pieces)


def test_a_slow_thread_takes_fewer_pieces() -> None:
    """Pieces go to whichever thread is free: here a pool thread stalls on its first piece
    until the calling thread has done every other one, and the job still completes."""
    caller = threading.get_ident()
    total = 40 * PIECE
    last_started = threading.Event()
    done: dict[int, list[int]] = {}

    def work(start: int, end: int) -> None:
        if threading.get_ident() != caller:
            assert last_started.wait(10), "the calling thread never reached the last piece"
        elif end == total:
            last_started.set()
        done.setdefault(threading.get_ident(), []).append(start)

    with deadline(20):
        run_split(total, 4, work)
    starts = sorted(start for pieces in done.values() for start in pieces)
    assert starts == [start for start, _ in ranges(total, 4)]
    assert len(done[caller]) >= len(starts) - 3  # each stalled pool thread held one piece


def test_thread_counts_come_from_the_argument_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSER_THREADS", "3")
    assert resolve_threads(None) == 3
    assert resolve_threads(1) == 1
    assert resolve_threads(1000) == parallel.MAX_THREADS
    monkeypatch.setenv("STREAMSER_THREADS", "many")
    with pytest.raises(ValueError, match="STREAMSER_THREADS"):
        resolve_threads(None)
    monkeypatch.delenv("STREAMSER_THREADS")
    assert 1 <= resolve_threads(None) <= 4
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            resolve_threads(bad)  # type: ignore[arg-type]


def test_an_error_in_any_range_is_raised_after_all_finish() -> None:
    done: list[int] = []

    def work(start: int, end: int) -> None:
        if start:
            raise OSError(f"range at {start}")
        done.append(start)

    with pytest.raises(OSError, match="range at"):
        run_split(10 * PIECE, 4, work)
    assert done == [0]


@pytest.mark.parametrize("threads", [1, 3])
def test_path_saves_and_eager_and_populated_loads(tmp_path: Path, threads: int) -> None:
    value = _value()
    path = tmp_path / "out.t7"
    streamser.save(path, value, threads=threads)
    assert path.read_bytes() == streamser.serialize(value)
    for options in ({"mmap": False}, {"populate": True}, {}):
        loaded = streamser.load(path, threads=threads, **options)
        for name, array in value.items():
            np.testing.assert_array_equal(loaded[name], array)


def test_an_eager_ascii_load_reads_the_text_once(tmp_path: Path) -> None:
    value = _value()
    path = tmp_path / "out.t7"
    streamser.save(path, value, format="ascii")
    with open(path, "rb") as source:
        buffer = mapping.map_file(source, mmap=False, threads=2)
    assert buffer.find(b"torch.FloatTensor") > 0  # searchable in place: no bytes() copy needed
    loaded = streamser.load(path, mmap=False, threads=2)
    np.testing.assert_array_equal(loaded["more"], value["more"])


def test_a_file_shorter_than_announced_gives_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "short"
    data = os.urandom(6 * PIECE + 5)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        buffer = mapping.read_whole(fd, 9 * PIECE, threads=3)  # as if it shrank meanwhile
    finally:
        os.close(fd)
    assert bytes(buffer) == data


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_threads(tmp_path: Path) -> None:
    path = tmp_path / "out.t7"
    streamser.save(path, _value(), threads=2)  # the parent's pool exists now
    with deadline(60), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        pid = os.fork()
        if pid == 0:  # the child: its copy of the pool has no threads
            try:
                loaded = streamser.load(path, mmap=False, threads=2)
                os._exit(0 if loaded["small"].tolist() == list(range(10)) else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
